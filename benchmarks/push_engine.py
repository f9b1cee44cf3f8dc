"""
The push engine (``agents.push``) between two loop devices on this
machine, over mutual TLS on 127.0.0.1, beside ``dd`` copying the same
device: the first round of a device half full of random data (the other
half zeros), a round after 1% of its blocks changed, and a verification.

The baseline is ``dd if=SRC bs=4M | dd of=DST bs=4M oflag=direct``: a
plain copy of every byte of the device, zeros included, device to device
through a pipe, with no network, encryption or hashing. The push's
throughput is given as device bytes made the same a second (the size of
the device over the round's time), comparable with dd's, and as data
bytes sent a second. Every device is read once before anything is
measured (the first read of a new loop device on this machine can take
seconds longer than the next), so the source is read from the page cache
by both and the figures are of the engines, not of this machine's disk.
Needs root; leaves nothing behind.

    .venv/bin/python benchmarks/push_engine.py [--size-mib 1024]
"""

import argparse
import os
import random
import subprocess
import sys
import time
from contextlib import contextmanager

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from blockmover.certificates import NODE  # noqa: E402
from blockmover.tls import TLSFiles  # noqa: E402

from agents.push import (  # noqa: E402
    BLOCK_SIZE, Offer, Receiver, send_round, verify,
)

from tests.cluster_ca import cluster_ca  # noqa: E402
from tests.scratch_devices import scratch_device  # noqa: E402

CLUSTER = "bench"
MIB = 1 << 20


def write_random(path, blocks):
    fd = os.open(path, os.O_WRONLY)
    try:
        for index in blocks:
            os.pwrite(fd, os.urandom(BLOCK_SIZE), index * BLOCK_SIZE)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_through(path):
    subprocess.run(["dd", "if=" + path, "of=/dev/null", "bs=4M",
                    "status=none"], check=True)


def dd_copy(source, target):
    started = time.monotonic()
    subprocess.run("dd if=%s bs=4M status=none | dd of=%s bs=4M "
                   "oflag=direct status=none" % (source, target),
                   shell=True, check=True)
    return time.monotonic() - started


def receive(device, ca, certificate, key):
    """
    Run node ``target``'s receiver, writing into ``device``, in this
    process (as an agent would, apart from the sender's); print its port,
    and stop when standard input closes.
    """
    files = TLSFiles(ca=ca, certificate=certificate, key=key)
    receiver = Receiver(files, bench_cluster(), lambda peer, offer: device,
                        address="127.0.0.1")
    receiver.start()
    print(receiver.port, flush=True)
    sys.stdin.read()
    receiver.stop()


@contextmanager
def receiver_process(device, files):
    """
    The port of a receiver into ``device`` with ``files`` running in a
    process of its own, as it would on the target node.
    """
    process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--receive", device,
         files.ca, files.certificate, files.key],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield int(process.stdout.readline())
    finally:
        process.stdin.close()
        process.wait()


def bench_cluster():
    return CLUSTER


def rate(amount, seconds):
    return "%7.0f MB/s" % (amount / seconds / 1e6,)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--receive", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receive:
        return receive(*args.receive)
    size = args.size_mib * MIB
    blocks = size // BLOCK_SIZE
    authority = cluster_ca(CLUSTER)
    offer = Offer(push_id="bench", dataset_id="bench", source_node="source",
                  target_node="target", source_volume="source",
                  target_volume="target", size=size)
    files = authority.files(NODE, "source")
    random_blocks = sorted(random.sample(range(blocks), blocks // 2))
    print("device %d MiB, %d of its %d blocks of 1 MiB random, the rest "
          "zeros; %d CPUs" % (args.size_mib, len(random_blocks), blocks,
                              os.cpu_count()))
    with scratch_device(size) as source, scratch_device(size) as target, \
            scratch_device(size) as dd_target:
        write_random(source.path, random_blocks)
        # The first read of a new loop device here can take seconds more
        # than the next, whoever reads it: read each once, first.
        for device in (source, target, dd_target):
            read_through(device.path)
        dd_seconds = min(dd_copy(source.path, dd_target.path)
                         for _ in range(2))
        print("dd | dd oflag=direct (every byte, no network) %6.2f s  %s"
              % (dd_seconds, rate(size, dd_seconds)))
        with receiver_process(target.path,
                              authority.files(NODE, "target")) as port:
            first = send_round(offer, source.path, "127.0.0.1", port, files)
            print("push round 1 (%d blocks sent)            %6.2f s  %s "
                  "of device, %s sent; %.2f of dd's"
                  % (first.blocks_sent, first.seconds,
                     rate(size, first.seconds),
                     rate(first.bytes_sent, first.seconds).strip(),
                     dd_seconds / first.seconds))
            changed = random.sample(range(blocks), blocks // 100)
            write_random(source.path, changed)
            second = send_round(offer, source.path, "127.0.0.1", port, files)
            print("push round after 1%% changed (%d blocks)   %6.2f s  %s "
                  "of device" % (second.blocks_sent, second.seconds,
                                 rate(size, second.seconds)))
            started = time.monotonic()
            verification = verify(offer, source.path, "127.0.0.1", port,
                                  files)
            seconds = time.monotonic() - started
            print("verify (both sides read %d MiB)           %6.2f s  %s; "
                  "same: %s" % (args.size_mib, seconds, rate(size, seconds),
                                verification.same))
    print("round1_vs_dd=%.2f" % (dd_seconds / first.seconds,))


if __name__ == "__main__":
    main()
