"""
The push engine (``agents.push``) between two real loop devices, over real
mutual TLS with certificates of a test CA, in real threads: what a round
sends, what the target then holds, what verification says, whom the
receiver refuses and whom the sender refuses, and a round cut short.
"""

import contextlib
import os
import time

import pytest
from eliot import add_destinations, remove_destination

from blockmover import certificates
from blockmover.certificates import NODE, USER

from agents import push as engine
from agents.push import (
    HASH_SIZE, Authorized, Offer, PushFailed, PushRefused, Receiver, TokenBucket,
    send_round, verify,
)

from tests.cluster_ca import cluster_ca
from tests.scratch_devices import scratch_device

CLUSTER = "pushing"
BLOCK = 64 << 10
# Not a whole number of blocks: the last block is half a block.
SIZE = 256 * BLOCK + BLOCK // 2
BLOCKS = 257


def cluster():
    return CLUSTER


def node_files(name, cluster_name=CLUSTER):
    return cluster_ca(cluster_name).files(NODE, name)


def offer(**changes):
    fields = dict(push_id="push-1", dataset_id="dataset-1",
                  source_node="source", target_node="target",
                  source_volume="vol-source", target_volume="vol-target",
                  size=SIZE, block_size=BLOCK)
    fields.update(changes)
    return Offer(**fields)


def revoked_serials():
    authority = cluster_ca(CLUSTER)
    with open(authority.crl, "rb") as f:
        pem = f.read()
    with open(node_files("target").ca, "rb") as f:
        ca_certificate = certificates.load_certificate(f.read())
    return certificates.revoked_serials(pem, ca_certificate)


@contextlib.contextmanager
def devices(source_size=SIZE, target_size=SIZE):
    """
    A source and a target loop device, both of zeros.
    """
    with scratch_device(source_size) as source, \
            scratch_device(target_size) as target:
        yield source.path, target.path


@contextlib.contextmanager
def receiving(device, authorize=None, files=None):
    """
    A started ``Receiver`` of node ``target`` writing into ``device``.
    """
    if authorize is None:
        def authorize(peer, offer):
            return device
    receiver = Receiver(files or node_files("target"), cluster(), authorize,
                        address="127.0.0.1", revoked=revoked_serials)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


def write(path, blocks):
    """
    Write ``blocks`` (index to bytes) on the device at ``path``, synced.
    """
    fd = os.open(path, os.O_WRONLY)
    try:
        for index, data in blocks.items():
            os.pwrite(fd, data, index * BLOCK)
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path, size=SIZE):
    with open(path, "rb") as f:
        return f.read(size)


def random_blocks(indexes):
    return {i: os.urandom(min(BLOCK, SIZE - i * BLOCK)) for i in indexes}


def push(receiver, source, **kwargs):
    return send_round(kwargs.pop("offer", offer()), source, "127.0.0.1",
                      receiver.port, kwargs.pop("files", node_files("source")),
                      revoked=revoked_serials, **kwargs)


def check(receiver, source, files=None):
    return verify(offer(), source, "127.0.0.1", receiver.port,
                  files or node_files("source"), revoked=revoked_serials)


def test_first_round_sends_the_nonzero_blocks():
    """
    The first round into a target of zeros sends each non-zero block of
    the source, the short last one included, and nothing else; the target
    then holds what the source holds.
    """
    written = random_blocks([0, 3, 4, 100, 200, 255, 256])
    with devices() as (source, target), receiving(target) as receiver:
        write(source, written)
        result = push(receiver, source)
        assert (result.blocks_sent, result.bytes_sent, result.bytes_scanned) \
            == (7, 6 * BLOCK + BLOCK // 2, SIZE)
        assert len(result.hashes) == BLOCKS
        assert all(len(h) == HASH_SIZE for h in result.hashes)
        assert read(target) == read(source)


def test_next_round_sends_the_changed_blocks():
    """
    A later round sends exactly the blocks changed since, a block zeroed
    on the source as a block without data; one more round sends nothing.
    """
    with devices() as (source, target), receiving(target) as receiver:
        write(source, random_blocks(range(0, BLOCKS, 2)))
        first = push(receiver, source)
        assert first.blocks_sent == 129
        write(source, random_blocks([1, 10, 256]))
        write(source, {20: bytes(BLOCK)})
        second = push(receiver, source)
        assert (second.blocks_sent, second.bytes_sent) == \
            (4, 2 * BLOCK + BLOCK // 2)
        assert [i for i in range(BLOCKS)
                if first.hashes[i] != second.hashes[i]] == [1, 10, 20, 256]
        assert read(target) == read(source)
        assert push(receiver, source).blocks_sent == 0


def test_verify():
    """
    Verification says the devices are the same after a round, and not the
    same after a byte changed on the target behind the receiver's back;
    the next round puts that block right.
    """
    with devices() as (source, target), receiving(target) as receiver:
        write(source, random_blocks(range(0, BLOCKS, 3)))
        push(receiver, source)
        same = check(receiver, source)
        assert same.same
        assert same.source_digest == same.target_digest
        fd = os.open(target, os.O_WRONLY)
        try:
            os.pwrite(fd, b"\x01", 5 * BLOCK + 7)
            os.fsync(fd)
        finally:
            os.close(fd)
        changed = check(receiver, source)
        assert not changed.same
        assert changed.source_digest == same.source_digest
        assert push(receiver, source).blocks_sent == 1
        assert check(receiver, source).same


@contextlib.contextmanager
def refusals():
    """
    The reasons the receiver logs for refusing, as they come.
    """
    seen = []
    add_destinations(seen.append)
    reasons = []
    try:
        yield reasons
    finally:
        remove_destination(seen.append)
        reasons.extend(m["reason"] for m in seen
                       if m.get("message_type") == "blockmover:push:refused")


def other_cluster_files():
    """
    A node certificate of another cluster, presented to a receiver whose
    CA the sender believes.
    """
    theirs = node_files("source", cluster_name="elsewhere")
    return theirs.set(ca=node_files("source").ca)


def revoked_files():
    files = node_files("revoked")
    if not revoked_serials():
        cluster_ca(CLUSTER).revoke(NODE, "revoked")
    return files


@pytest.mark.parametrize("files, reason", [
    (other_cluster_files, "not issued by cluster pushing's CA"),
    (lambda: cluster_ca(CLUSTER).files(USER, "someone"),
     "only the nodes of cluster pushing push volumes; the certificate is "
     "user someone's"),
    (revoked_files, "the certificate of node revoked (serial"),
], ids=["other-cluster", "user", "revoked"])
def test_receiver_refuses_who_is_not_a_node(files, reason):
    """
    The receiver refuses a peer whose certificate is not that of a node of
    its cluster, says why to the peer and in its log, and writes nothing.
    """
    with devices() as (source, target), receiving(target) as receiver:
        write(source, random_blocks(range(10)))
        with refusals() as logged:
            with pytest.raises(PushRefused) as refused:
                push(receiver, source, files=files())
        assert any(reason in r for r in logged), logged
        if files is other_cluster_files:
            # Refused at the TLS handshake: the peer hears it as an alert.
            assert "refused this node's certificate at the TLS handshake" \
                in str(refused.value)
        else:
            assert reason in str(refused.value)
        assert read(target) == bytes(SIZE)


def test_receiver_refuses_what_authorize_refuses():
    def authorize(peer, offer):
        raise PushRefused("node %s may not push %s here" % (
            peer, offer.dataset_id))
    with devices() as (source, target), \
            receiving(target, authorize=authorize) as receiver:
        write(source, random_blocks(range(10)))
        with refusals() as logged:
            with pytest.raises(PushRefused) as refused:
                push(receiver, source)
        assert "node source may not push dataset-1 here" in \
            str(refused.value)
        assert logged == ["node source may not push dataset-1 here"]
        assert read(target) == bytes(SIZE)


def test_sender_refuses_a_server_that_is_not_the_target():
    """
    A server that is a node of the cluster, but not the offer's target, is
    sent nothing.
    """
    with devices() as (source, target), \
            receiving(target, files=node_files("source")) as receiver:
        write(source, random_blocks(range(10)))
        with pytest.raises(PushFailed) as failed:
            push(receiver, source)
        assert "is node source, not node target" in str(failed.value)
        assert read(target) == bytes(SIZE)


def test_target_smaller_than_the_offer_is_refused():
    with devices(target_size=SIZE - BLOCK) as (source, target), \
            receiving(target) as receiver:
        write(source, random_blocks(range(10)))
        with pytest.raises(PushRefused) as refused:
            push(receiver, source)
        assert "holds %d bytes, fewer than the %d pushed" % (
            SIZE - BLOCK, SIZE) in str(refused.value)
        assert read(target, SIZE - BLOCK) == bytes(SIZE - BLOCK)


def test_source_smaller_than_the_offer_fails():
    with devices() as (source, target), receiving(target) as receiver:
        with pytest.raises(PushFailed) as failed:
            push(receiver, source, offer=offer(size=SIZE + BLOCK))
        assert "fewer than the %d of the offer" % (SIZE + BLOCK,) in \
            str(failed.value)


def test_round_cut_short_is_finished_by_the_next():
    """
    A receiver stopped in the middle of a round fails the round; a new
    receiver on the same device (knowing nothing of the first) reads the
    device, takes the next round, and the devices are then the same.
    """
    with devices() as (source, target):
        write(source, random_blocks(range(BLOCKS)))
        first = Receiver(node_files("target"), cluster(),
                         lambda peer, offer: target, address="127.0.0.1",
                         revoked=revoked_serials)
        first.start()
        told = []

        def progress(sent, scanned, size):
            told.append((sent, scanned, size))
            if sent > 0:
                first.stop()
        try:
            with pytest.raises(PushFailed) as failed:
                # Slow enough to be cut in the middle.
                push(first, source, cap=SIZE, progress=progress)
        finally:
            first.stop()
        assert "cut short" in str(failed.value)
        assert told and told[-1][1] < SIZE
        with receiving(target) as second:
            result = push(second, source)
            assert 0 < result.blocks_sent <= BLOCKS
            assert check(second, source).same
        assert read(target) == read(source)


def test_receiver_that_does_not_answer_fails_the_round(monkeypatch):
    """
    A receiver that does not answer (here: reading its device for its
    hashes takes too long) fails the round within the bounded wait, with
    a message saying what the source waited for; the next round, once it
    answers, finishes the push.
    """
    read_device = engine.block_hashes

    def slow(path, size, block_size):
        time.sleep(1.0)
        return read_device(path, size, block_size)
    monkeypatch.setattr(engine, "answer_wait", lambda size: 0.3)
    with devices() as (source, target), receiving(target) as receiver:
        write(source, random_blocks(range(10)))
        monkeypatch.setattr(engine, "block_hashes", slow)
        with pytest.raises(PushFailed) as failed:
            push(receiver, source)
        assert "did not answer within" in str(failed.value)
        assert "waited for the hashes of its device" in str(failed.value)
        monkeypatch.setattr(engine, "block_hashes", read_device)
        assert push(receiver, source).blocks_sent == 10
        assert read(target) == read(source)


def test_answer_wait_grows_with_the_device():
    assert engine.answer_wait(0) >= 60
    assert engine.answer_wait(1 << 40) > 1000


def test_token_bucket():
    """
    A bandwidth cap lets a burst go at once, then one rate's worth a
    second, refilled by the time that passes and never beyond the burst.
    """
    bucket = TokenBucket(rate=100, burst=50, now=0.0)
    assert bucket.take(50, now=0.0) == 0.0
    assert bucket.take(20, now=0.0) == pytest.approx(0.2)
    # 0.2 s later the debt is paid and nothing is left.
    assert bucket.take(10, now=0.2) == pytest.approx(0.1)
    # A long pause fills the bucket to its burst only.
    assert bucket.take(50, now=100.0) == 0.0
    assert bucket.take(1, now=100.0) == pytest.approx(0.01)
    # A take bigger than the burst is let through at the rate.
    assert TokenBucket(rate=10, burst=5, now=0.0).take(25, now=0.0) == \
        pytest.approx(2.0)


def test_verify_takes_the_source_digest_from_a_round_s_hashes():
    """
    The source's digest from the hashes a round just read is the digest
    of reading it again; hashes of another geometry are refused before
    anything is asked.
    """
    with devices() as (source, target), receiving(target) as receiver:
        write(source, random_blocks(range(0, BLOCKS, 5)))
        result = push(receiver, source)
        read_again = check(receiver, source)
        from_round = verify(offer(), source, "127.0.0.1", receiver.port,
                            node_files("source"),
                            source_hashes=result.hashes)
        assert from_round.same
        assert from_round.source_digest == read_again.source_digest
        with pytest.raises(PushFailed):
            verify(offer(), source, "127.0.0.1", receiver.port,
                   node_files("source"), source_hashes=result.hashes[1:])


def test_a_target_granted_blank_is_not_read_and_a_wrong_grant_is_caught():
    """
    A target granted as blank is taken as zeros without reading it: when
    it was not, the check at the end says so, and the round after it
    (hashes read from the device by the check) puts it right.
    """
    with devices() as (source, target):
        write(source, random_blocks(range(0, BLOCKS, 4)))
        # Not blank at all, whatever the grant says.
        write(target, random_blocks(range(1, BLOCKS, 4)))

        def authorize(peer, offer):
            return Authorized(device=target, blank=True)
        with receiving(target, authorize=authorize) as receiver:
            first = push(receiver, source)
            # Only the source's non-zero blocks went: the target's own
            # were never looked at.
            assert first.blocks_sent == len(range(0, BLOCKS, 4))
            assert not check(receiver, source).same
            again = push(receiver, source)
            assert again.blocks_sent == len(range(1, BLOCKS, 4))
            assert check(receiver, source).same
        assert read(target) == read(source)


def test_the_check_after_a_last_round_reads_what_it_wrote_again():
    """
    A last round has the target read its device for the check beside the
    round; the check then reads again the blocks the round wrote. A block
    changed behind the receiver's back before the last round is caught,
    as is one the round wrote (the device, not the round's hashes, is
    what the check reads).
    """
    with devices() as (source, target), receiving(target) as receiver:
        write(source, random_blocks(range(0, BLOCKS, 3)))
        push(receiver, source)
        write(source, random_blocks([7, 100]))
        last = push(receiver, source, last=True)
        assert last.blocks_sent == 2
        same = verify(offer(), source, "127.0.0.1", receiver.port,
                      node_files("source"), revoked=revoked_serials,
                      source_hashes=last.hashes)
        assert same.same
        assert same.target_digest == check(receiver, source).target_digest
        # Changed on the target behind the receiver's back, then a last
        # round that writes block 7 again: both are seen by the check.
        fd = os.open(target, os.O_WRONLY)
        try:
            os.pwrite(fd, b"\x01", 9 * BLOCK)
            os.fsync(fd)
        finally:
            os.close(fd)
        write(source, random_blocks([7]))
        last = push(receiver, source, last=True)
        assert not check(receiver, source).same
        push(receiver, source, last=True)
        assert check(receiver, source).same
        assert read(target) == read(source)
