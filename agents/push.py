"""
Pushing a volume's blocks from the source node's agent to the target
node's agent (in another site) over mutual TLS, while the application keeps
running, in rounds; then verifying that both devices hold the same bytes.

The source says what it pushes in an ``Offer``; the target's ``Receiver``
believes the source's node certificate, asks its ``authorize`` callback
which device to write, and answers with the hash of each of that device's
blocks. The source (``send_round``) reads its own device and sends only
the blocks whose hash differs; a block of zeros is sent as a zero frame
with no data. ``verify`` compares a digest of each side's whole device.

The check reads each device whole once the source no longer changes,
without adding a read of its own to the outage: the source's digest comes
from the hashes its last round read (the caller may give them), and the
target reads its device beside that last round (asked for with ``last``),
then reads again only the blocks the round wrote while it read. Nothing
but the receiver writes a target device, so that is the whole device as
it is at the check.

What is kept where, so that a round cut short is repaired by the next one:
the receiver keeps each target volume's block hashes in memory, read from
its device at the first session for that volume, and changes a block's
hash only once the block is written; nothing else is kept. Every round
starts by asking for those hashes again, and a receiver that restarted
reads its device again.

The digest of a device (``verify``): the device's first ``offer.size``
bytes cut into blocks of ``offer.block_size`` (the last block may be
shorter); each block's SHA-256, zero blocks like any other; the digest is
the SHA-256 of those block hashes concatenated in block order, written in
hex. SHA-256 because it is the fastest strong hash here (the CPU has SHA
instructions: about 1.7 GB/s, against 0.6 GB/s for BLAKE2b).

The protocol, on one TLS connection per round or verification: the source
sends a message (a 4-byte big-endian length, then a JSON object) with the
operation, the offer and whether it is the last round; the receiver
answers ``{"refused": reason}`` or
``{"accepted": true}``. For a round it then sends ``{"blocks": n}`` and the
n block hashes (32 bytes each); the source sends frames (``_FRAME``: kind,
block index, length, hash), a data frame followed by its block; an end
frame asks the receiver to fsync and answer ``{"written": blocks}``. For a
verification the receiver answers ``{"digest": hex}``.

Blocking: everything here runs in threads, never on the reactor.
"""

import datetime
import hashlib
import json
import errno
import mmap
import os
import queue
import socket
import ssl
import struct
import threading
import time

from cryptography import x509
from eliot import log_message
from pyrsistent import PClass, field
from pyrsistent import InvariantException, PTypeError

from blockmover import certificates

BLOCK_SIZE = 1 << 20
_HASH = hashlib.sha256
HASH_SIZE = 32

# The source reads this much at a time (a whole number of blocks): few
# system calls, and the kernel's read-ahead keeps the disk busy.
_CHUNK = 8 << 20
# Chunks read ahead of the sender: enough to keep the network busy while
# the reader waits for the disk, few enough to bound the memory.
_CHUNKS_AHEAD = 4

# Frame kinds the source sends in a round.
_DATA = 1
_ZERO = 2
_END = 3
# Sent when the source has sent nothing for a while (its blocks are all
# the same as the target's), so the receiver knows it is still there.
_STILL_HERE = 4
_FRAME = struct.Struct("!BQI%ds" % (HASH_SIZE,))
_LENGTH = struct.Struct("!I")
# A message (JSON) bigger than this is not one of ours.
_MAX_MESSAGE = 64 << 10

_ROUND = "round"
_VERIFY = "verify"

# How long a peer may take over the TLS handshake and its first message.
_HANDSHAKE_TIMEOUT = 20.0
# How long the receiver waits for the source's next frame; the source
# sends one at least every _STILL_HERE_AFTER seconds.
_FRAME_TIMEOUT = 120.0
_STILL_HERE_AFTER = 10.0
# How long a new session for a volume waits for the one before it (which
# may not yet have seen its connection drop) before it is refused.
_VOLUME_BUSY_WAIT = 30.0
# The receiver's blocks waiting for its writer thread: enough to keep the
# device busy while the next blocks arrive, few enough to bound memory.
_WRITES_AHEAD = 8
# O_DIRECT wants offsets, lengths and buffers aligned to the device's
# logical block size; 4096 is a multiple of every common one.
_DIRECT_ALIGNMENT = 4096
# How long the source waits for each answer of the receiver's (the target
# device's hashes, its fsync, its digest), which may need the whole device
# read: this long, plus the device's size at the slowest rate a disk still
# in service reads.
_ANSWER_WAIT = 60.0
_SLOWEST_READ = 10e6
# How long ``Receiver.stop`` waits for its threads.
_STOP_WAIT = 10.0
# Progress is told at most this often (seconds).
_PROGRESS_EVERY = 0.25


class PushError(Exception):
    """
    Base of the errors of a push a person may meet.
    """


class PushRefused(PushError):
    """
    The receiver would not take the push; the message is its reason.
    """


class PushFailed(PushError):
    """
    A round or verification did not finish: the connection dropped, a
    device is too short, the peer is not who it should be. Another round
    repairs whatever this one left half-done.
    """


def _positive(name):
    return lambda v: (v > 0, "%s must be positive" % (name,))


class Offer(PClass):
    """
    What the source says it pushes: ``size`` bytes of ``source_volume``
    on ``source_node`` into ``target_volume`` on ``target_node``, in
    blocks of ``block_size`` bytes. The receiver authorizes it.
    """
    push_id = field(type=str, mandatory=True)
    dataset_id = field(type=str, mandatory=True)
    source_node = field(type=str, mandatory=True)
    target_node = field(type=str, mandatory=True)
    source_volume = field(type=str, mandatory=True)
    target_volume = field(type=str, mandatory=True)
    size = field(type=int, mandatory=True,
                 invariant=lambda v: (v >= 0, "size must not be negative"))
    block_size = field(type=int, mandatory=True, initial=BLOCK_SIZE,
                       invariant=_positive("block_size"))

    @property
    def blocks(self):
        return -(-self.size // self.block_size)

    def block_length(self, index):
        return min(self.block_size, self.size - index * self.block_size)

    def to_data(self):
        return {name: getattr(self, name) for name in self._pclass_fields}


class Authorized(PClass):
    """
    What ``authorize`` may grant an offer: the ``device`` to write it
    into, and whether that device is known to hold nothing but zeros
    (``blank``: made blank for this push), so its blocks' hashes are known
    without reading it. A bare path grants the device, not known blank.
    """
    device = field(type=str, mandatory=True)
    blank = field(type=bool, mandatory=True, initial=False)


class RoundResult(PClass):
    """
    What one round did: blocks and bytes of data sent (a zero block counts
    as a block sent, with no bytes), bytes of the source read, how long it
    took, and the source's block hashes as read in this round (a tuple of
    ``HASH_SIZE``-byte digests, in block order).
    """
    blocks_sent = field(type=int, mandatory=True)
    bytes_sent = field(type=int, mandatory=True)
    bytes_scanned = field(type=int, mandatory=True)
    seconds = field(type=float, mandatory=True)
    hashes = field(type=tuple, mandatory=True)


class Verification(PClass):
    """
    The digests (see the module's docstring) of the source's and the
    target's device, and whether they are the same.
    """
    source_digest = field(type=str, mandatory=True)
    target_digest = field(type=str, mandatory=True)

    @property
    def same(self):
        return self.source_digest == self.target_digest


class TokenBucket(object):
    """
    A bandwidth cap of ``rate`` bytes a second with bursts of ``burst``
    bytes. Pure: it is told the time. A sender takes what it is about to
    send and sleeps for the delay it is given; a take bigger than what the
    bucket holds borrows from the future, so blocks bigger than the burst
    go through at the rate too.
    """

    def __init__(self, rate, burst, now):
        if rate <= 0 or burst <= 0:
            raise ValueError("a bandwidth cap must be positive")
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at = now

    def take(self, amount, now):
        """
        Take ``amount`` bytes; return the seconds to wait before sending
        them (0 if they may go now).
        """
        self._tokens = min(self.burst,
                           self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= amount
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate


# --- reading a device -----------------------------------------------------

_zero_hashes = {}


def zero_hash(length):
    """
    The hash of ``length`` zero bytes.
    """
    if length not in _zero_hashes:
        _zero_hashes[length] = _HASH(bytes(length)).digest()
    return _zero_hashes[length]


def device_size(path):
    """
    The size in bytes of the device (or file) at ``path``.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


class _Chunk(object):
    """
    Some blocks read from a device: ``view`` holds blocks ``first`` on,
    ``hashes`` their hashes and ``zero`` whether each is all zeros.
    """

    def __init__(self, buffer):
        # An anonymous mmap: page-aligned, as O_DIRECT reads want.
        self.buffer = buffer
        self.view = memoryview(buffer)
        self.first = 0
        self.hashes = []
        self.zero = []


class _BlockReader(object):
    """
    Reads the first ``size`` bytes of the device at ``path`` in a thread
    of its own, a chunk of blocks at a time into buffers it reuses, and
    hashes them there (hashlib lets go of the GIL on big buffers), so that
    reading and hashing overlap what the caller does with each chunk.

    Iterate for ``_Chunk``s and ``release`` each when done with it; leave
    the ``with`` block to stop the thread.

    No ``posix_fadvise(SEQUENTIAL)``: on a loop device it made reading 20
    times slower, and the kernel's own read-ahead sees a sequential read.
    Reads are O_DIRECT where the device takes them (like ``dd
    iflag=direct``): the page cache is neither filled nor read, so the
    first read of a freshly attached loop device goes at 4 GB/s here
    rather than 240 MB/s, and what a device holds is read as it is on it
    (a filesystem on it is unmounted, or its later rounds read it again).
    """

    def __init__(self, path, size, block_size):
        self._path = path
        self._size = size
        self._block_size = block_size
        self._blocks_a_chunk = max(1, _CHUNK // block_size)
        self._free = queue.Queue()
        self._full = queue.Queue()
        length = self._blocks_a_chunk * block_size
        for _ in range(_CHUNKS_AHEAD):
            self._free.put(_Chunk(mmap.mmap(-1, length)))
        self._stopping = False
        self._thread = threading.Thread(target=self._read, daemon=True,
                                         name="push-reader")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stopping = True
        # Hands the reader a buffer in case it waits for one.
        self._free.put(None)
        self._thread.join()

    def __iter__(self):
        while True:
            chunk = self._full.get()
            if chunk is None:
                return
            if isinstance(chunk, BaseException):
                raise chunk
            yield chunk

    def release(self, chunk):
        self._free.put(chunk)

    def _read(self):
        try:
            fd = os.open(self._path, os.O_RDONLY)
        except OSError as e:
            self._full.put(PushFailed("cannot read %s (%s)"
                                      % (self._path, e.strerror)))
            return
        try:
            self._direct = os.open(self._path, os.O_RDONLY | os.O_DIRECT)
        except OSError:
            # A file on a filesystem without O_DIRECT: the page cache.
            self._direct = None
        try:
            zeros = bytes(self._block_size)
            blocks = -(-self._size // self._block_size)
            block = 0
            while block < blocks and not self._stopping:
                chunk = self._free.get()
                if chunk is None:
                    break
                count = min(self._blocks_a_chunk, blocks - block)
                offset = block * self._block_size
                length = min(count * self._block_size, self._size - offset)
                self._fill(fd, chunk.view[:length], offset)
                chunk.first = block
                chunk.hashes = []
                chunk.zero = []
                for start in range(0, length, self._block_size):
                    end = min(start + self._block_size, length)
                    # A slice of the mmap is a copy, but compared at
                    # memcmp's speed (a memoryview's is 25 times slower).
                    if chunk.buffer[start:end] == zeros[:end - start]:
                        chunk.zero.append(True)
                        chunk.hashes.append(zero_hash(end - start))
                    else:
                        chunk.zero.append(False)
                        chunk.hashes.append(
                            _HASH(chunk.view[start:end]).digest())
                self._full.put(chunk)
                block += count
            self._full.put(None)
        except OSError as e:
            self._full.put(PushFailed("cannot read %s (%s)"
                                      % (self._path, e.strerror)))
        except PushFailed as e:
            self._full.put(e)
        finally:
            os.close(fd)
            if self._direct is not None:
                os.close(self._direct)

    def _fill(self, fd, view, offset):
        done = 0
        while done < len(view):
            aligned = (len(view) - done) // _DIRECT_ALIGNMENT * \
                _DIRECT_ALIGNMENT
            if self._direct is not None and aligned and \
                    (offset + done) % _DIRECT_ALIGNMENT == 0:
                # An unaligned tail, or what a short read left, goes
                # through the page cache below.
                try:
                    got = os.preadv(self._direct,
                                    [view[done:done + aligned]],
                                    offset + done)
                except OSError as e:
                    if e.errno != errno.EINVAL:
                        raise
                    self._direct = None
                    continue
                if got > 0:
                    done += got
                    continue
            got = os.preadv(fd, [view[done:]], offset + done)
            if got == 0:
                raise PushFailed(
                    "%s ends at %d bytes, before the %d bytes pushed"
                    % (self._path, offset + done, self._size))
            done += got


def block_hashes(path, size, block_size):
    """
    The hashes of the blocks of the first ``size`` bytes of ``path``, in
    order.
    """
    hashes = []
    with _BlockReader(path, size, block_size) as reader:
        for chunk in reader:
            hashes.extend(chunk.hashes)
            reader.release(chunk)
    return hashes


def digest_of(hashes):
    """
    The digest of a device whose block hashes are ``hashes``.
    """
    return _HASH(b"".join(hashes)).hexdigest()


# --- the wire -------------------------------------------------------------

class _ProtocolError(Exception):
    """
    The peer sent something that is not this protocol.
    """


class _Channel(object):
    """
    Messages, frames and raw bytes over one TLS connection.
    """

    def __init__(self, connection):
        self.connection = connection
        self._header = bytearray(_FRAME.size)

    def send_message(self, message):
        body = json.dumps(message).encode("utf-8")
        self.connection.sendall(_LENGTH.pack(len(body)) + body)

    def receive_message(self):
        (length,) = _LENGTH.unpack(self.receive_bytes(_LENGTH.size))
        if length > _MAX_MESSAGE:
            raise _ProtocolError("a message of %d bytes" % (length,))
        try:
            message = json.loads(self.receive_bytes(length).decode("utf-8"))
        except ValueError as e:
            raise _ProtocolError("a message that is not JSON (%s)" % (e,))
        if not isinstance(message, dict):
            raise _ProtocolError("a message that is not an object")
        return message

    def receive_bytes(self, length):
        buffer = bytearray(length)
        self.receive_into(memoryview(buffer))
        return bytes(buffer)

    def receive_into(self, view):
        done = 0
        while done < len(view):
            got = self.connection.recv_into(view[done:])
            if got == 0:
                raise ConnectionError("the connection was closed")
            done += got

    def send_frame(self, kind, index=0, length=0, digest=b""):
        self.connection.sendall(_FRAME.pack(kind, index, length, digest))

    def receive_frame(self):
        self.receive_into(memoryview(self._header))
        return _FRAME.unpack(self._header)


def _now(clock):
    return datetime.datetime.fromtimestamp(clock(), datetime.timezone.utc)


class _Files(object):
    """
    A node's TLS files, loaded: its CA's certificate (``cryptography``)
    and what ``ssl`` needs.
    """

    def __init__(self, files):
        try:
            with open(files.ca, "rb") as f:
                self.ca_certificate = certificates.load_certificate(
                    f.read(), "the CA certificate %s" % (files.ca,))
        except OSError as e:
            raise PushFailed("cannot read the CA certificate %s (%s)"
                             % (files.ca, e.strerror))
        self.cluster = certificates.cluster_of(self.ca_certificate)
        self.files = files

    def context(self, purpose):
        context = ssl.SSLContext(purpose)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if purpose == ssl.PROTOCOL_TLS_CLIENT:
            # The peer is believed by the node name in its certificate,
            # checked after the handshake, not by the address dialled.
            context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(self.files.ca)
        context.load_cert_chain(self.files.certificate, self.files.key)
        return context

    def identity_of_peer(self, connection, revoked, now):
        """
        The ``Identity`` of the peer's certificate, believed.

        :raise certificates.CertificateError: saying why not.
        """
        der = connection.getpeercert(binary_form=True)
        if der is None:
            raise certificates.CertificateRefused("it showed no certificate")
        certificate = x509.load_der_x509_certificate(der)
        return certificates.check(certificate, self.ca_certificate,
                                  revoked, now)


def _keep_alive(sock):
    # A peer that vanishes (its site cut off) is noticed within a minute
    # or two rather than never.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6)


# --- the target's side ----------------------------------------------------

def _let_alert_arrive(connection):
    """
    After a handshake that refused the peer's certificate, read what the
    peer sent meanwhile (in TLS 1.3 it may already send its first
    message) before closing: closing with data unread would reset the
    connection, and the peer would lose the alert that says why.
    """
    try:
        # The plain socket's calls: TLS is over on this connection.
        socket.socket.shutdown(connection, socket.SHUT_WR)
        connection.settimeout(1.0)
        while socket.socket.recv(connection, 65536):
            pass
    except OSError:
        pass


class _Refusal(Exception):
    """
    A session the receiver refuses; the message goes to the peer.
    """


class _TargetVolume(object):
    """
    What the receiver knows of one target volume: the device it was told
    to write, the offer's geometry, and the hashes of the device's blocks
    (None when unknown: read the device again). ``lock`` is held by the
    one session using it.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.device = None
        self.geometry = None
        self.hashes = None
        # A read of the whole device for the check, started with a last
        # round (``_ReadAhead``), and the blocks written since it started.
        self.reading = None
        self.dirty = set()

    def forget(self):
        """
        What the device holds is unknown: read it again.
        """
        self.hashes = None
        self.reading = None


class _ReadAhead(object):
    """
    The hashes of every block of ``device`` read in a thread of its own,
    while a last round writes; ``result()`` waits for them (None when the
    read failed).
    """

    def __init__(self, device, offer):
        self._hashes = None
        self._thread = threading.Thread(
            target=self._read, args=(device, offer), daemon=True,
            name="push-read-ahead")
        self._thread.start()

    def _read(self, device, offer):
        try:
            self._hashes = block_hashes(device, offer.size, offer.block_size)
        except (OSError, PushFailed) as e:
            log_message(message_type="blockmover:push:read-ahead-failed",
                        device=device, error=str(e))

    def result(self):
        self._thread.join()
        return self._hashes


def _block_hash(device, offer, index):
    """
    The hash of block ``index`` of ``device`` as it is on it now.
    """
    length = offer.block_length(index)
    fd = os.open(device, os.O_RDONLY)
    try:
        data = os.pread(fd, length, index * offer.block_size)
    finally:
        os.close(fd)
    if len(data) != length:
        raise PushFailed("%s ends inside block %d" % (device, index))
    if data == bytes(length):
        return zero_hash(length)
    return _HASH(data).digest()


class _Block(object):
    """
    A page-aligned buffer of one block (what O_DIRECT needs), lent by the
    ``_DeviceWriter`` to the session to receive into.
    """

    def __init__(self, block_size):
        self.memory = mmap.mmap(-1, block_size)
        self.view = memoryview(self.memory)


class _DeviceWriter(object):
    """
    Writes one round's blocks into ``device`` in a thread of its own, so
    that the session receives the next blocks meanwhile, and sets each
    block's hash in ``volume`` once it is written; tells
    ``on_received(offer, bytes)`` as it goes.

    Like ``dd oflag=direct``: aligned blocks are written with O_DIRECT,
    so the round neither fills the page cache nor waits at the end for
    it to be written back; the rest (a short last block, a device that
    will not open so) through the page cache. ``finish`` waits for every
    write and fsyncs. Any failed write forgets the volume's hashes (what
    the device holds is then unknown) and fails the round.
    """

    def __init__(self, device, offer, volume, on_received):
        self._device = device
        self._offer = offer
        self._volume = volume
        self._on_received = on_received
        self._free = queue.Queue()
        self._queued = queue.Queue()
        self._zeros = _Block(offer.block_size)
        self._error = None
        self._written = 0
        self._received = 0
        self._fd = self._direct = None

    def __enter__(self):
        self._fd = os.open(self._device, os.O_WRONLY)
        try:
            self._direct = os.open(self._device, os.O_WRONLY | os.O_DIRECT)
        except OSError:
            # A file on a filesystem without O_DIRECT: the page cache.
            self._direct = None
        for _ in range(_WRITES_AHEAD):
            self._free.put(_Block(self._offer.block_size))
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="push-writer")
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._queued.put(None)
        self._thread.join()
        for fd in (self._fd, self._direct):
            if fd is not None:
                os.close(fd)

    def buffer(self):
        """
        A free ``_Block`` to receive into (waits for one).

        :raise OSError: a write before failed.
        """
        block = self._free.get()
        self._check()
        return block

    def write(self, block, index, length, digest):
        """
        Write ``length`` bytes of ``block`` (None: zeros) at block
        ``index``, whose hash is ``digest``; ``block`` returns to the free
        ones once written.
        """
        self._check()
        self._queued.put((block, index, length, digest))

    def finish(self):
        """
        Wait for every write, fsync; the number of blocks written.
        """
        self._queued.put(None)
        self._thread.join()
        self._check()
        try:
            os.fsync(self._fd)
        except OSError:
            # What is on the device after a failed fsync is unknown.
            self._volume.forget()
            raise
        return self._written

    def _check(self):
        if self._error is not None:
            raise self._error

    def _run(self):
        while True:
            item = self._queued.get()
            if item is None:
                return
            block, index, length, digest = item
            if self._error is None:
                # Before the write: a read for the check that may have
                # seen the block before it must read it again.
                self._volume.dirty.add(index)
                try:
                    self._write(block or self._zeros, index, length)
                except OSError as e:
                    self._volume.forget()
                    self._error = e
                else:
                    self._volume.hashes[
                        index * HASH_SIZE:(index + 1) * HASH_SIZE] = digest
                    self._written += 1
                    self._received += length
                    self._on_received(self._offer, self._received)
            if block is not None:
                self._free.put(block)
            elif self._error is not None:
                # The session may wait for a buffer: there is none to come.
                self._free.put(self._zeros)

    def _write(self, block, index, length):
        offset = index * self._offer.block_size
        fd = self._fd
        if self._direct is not None and offset % _DIRECT_ALIGNMENT == 0 \
                and length % _DIRECT_ALIGNMENT == 0:
            fd = self._direct
        data = block.view[:length]
        done = 0
        while done < length:
            done += os.pwrite(fd, data[done:], offset + done)


class Receiver(object):
    """
    The target node's side of pushes: a TLS server (a thread to accept,
    one a connection) presenting the node's certificate from ``files``
    (``blockmover.tls.TLSFiles``) and requiring a peer certificate of a
    node of the cluster named ``cluster``, not revoked (``revoked()``
    returns the revoked serial numbers; ``clock()`` is the time in
    seconds).

    ``authorize(peer_node, offer)`` returns the path of the device to write
    the offer into, or raises ``PushRefused`` with a reason for the
    sender (which node may push what is the slice's to say); it is called
    in the connection's thread. Every refusal is sent to the peer on one
    line and logged (``blockmover:push:refused``). ``on_received(offer,
    bytes)`` is called as a round's blocks are written, ``on_verified(offer,
    digest)`` once the device's digest is taken.
    """

    def __init__(self, files, cluster, authorize, address="0.0.0.0", port=0,
                 revoked=lambda: frozenset(), clock=time.time,
                 on_received=None, on_verified=None):
        self._files = _Files(files)
        self._context = self._files.context(ssl.PROTOCOL_TLS_SERVER)
        self._cluster = cluster
        self._authorize = authorize
        self._on_received = on_received or (lambda offer, received: None)
        self._on_verified = on_verified or (lambda offer, digest: None)
        self._address = address
        self._requested_port = port
        self._revoked = revoked
        self._clock = clock
        self._lock = threading.Lock()
        self._volumes = {}
        self._connections = set()
        self._threads = set()
        self._listener = None
        self._stopping = False
        self.port = None

    def start(self):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self._address, self._requested_port))
        listener.listen(16)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._spawn(self._accept, "push-accept")

    def stop(self):
        """
        Close the listener and every connection, and wait (a bounded time)
        for their threads.
        """
        with self._lock:
            self._stopping = True
            connections = list(self._connections)
            threads = list(self._threads)
        if self._listener is not None:
            # Wakes the accepting thread.
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        for connection in connections:
            try:
                # The plain socket's shutdown: the TLS object stays with
                # the thread using it, which sees its connection end.
                socket.socket.shutdown(connection, socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + _STOP_WAIT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _spawn(self, target, name, *args):
        thread = threading.Thread(target=self._run, args=(target,) + args,
                                  name=name, daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _run(self, target, *args):
        try:
            target(*args)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _accept(self):
        while True:
            try:
                sock, address = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._stopping:
                    sock.close()
                    return
                self._connections.add(sock)
            self._spawn(self._serve, "push-session", sock,
                        "%s:%s" % address[:2])

    def _serve(self, sock, peer_address):
        connection = sock
        try:
            sock.settimeout(_HANDSHAKE_TIMEOUT)
            _keep_alive(sock)
            connection = self._context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False)
            with self._lock:
                self._connections.discard(sock)
                self._connections.add(connection)
            try:
                connection.do_handshake()
            except ssl.SSLCertVerificationError as e:
                self._refused(peer_address, None,
                              "its certificate is not issued by cluster "
                              "%s's CA (%s)" % (self._files.cluster,
                                                e.verify_message))
                _let_alert_arrive(connection)
                return
            except (ssl.SSLError, OSError) as e:
                self._refused(peer_address, None,
                              "the TLS handshake failed (%s)" % (e,))
                _let_alert_arrive(connection)
                return
            self._session(_Channel(connection), peer_address)
        finally:
            with self._lock:
                self._connections.discard(connection)
                self._connections.discard(sock)
            connection.close()

    def _refused(self, peer_address, channel, reason):
        log_message(message_type="blockmover:push:refused",
                    peer=peer_address, reason=reason)
        if channel is not None:
            try:
                channel.send_message({"refused": reason})
            except (OSError, ValueError):
                pass

    def _peer(self, connection):
        """
        The name of the node the peer is.

        :raise _Refusal: if it is not a node of the cluster.
        """
        try:
            holder = self._files.identity_of_peer(
                connection, self._revoked(), _now(self._clock))
        except certificates.CertificateError as e:
            raise _Refusal(str(e))
        if holder.kind != certificates.NODE or \
                holder.cluster != self._cluster:
            raise _Refusal(
                "only the nodes of cluster %s push volumes; the "
                "certificate is %s's" % (self._cluster, holder))
        return holder.name

    def _session(self, channel, peer_address):
        try:
            # Read before anything is refused: closing with the peer's
            # request unread would reset the connection, and the refusal
            # would be lost.
            request = channel.receive_message()
            peer = self._peer(channel.connection)
            operation = request.get("operation")
            if operation not in (_ROUND, _VERIFY):
                raise _Refusal("unknown operation %r" % (operation,))
            try:
                offer = Offer.create(request.get("offer"))
            except (InvariantException, PTypeError, TypeError,
                    AttributeError) as e:
                raise _Refusal("the offer is not one this node reads (%s)"
                               % (e,))
            try:
                granted = self._authorize(peer, offer)
            except PushRefused as e:
                raise _Refusal(str(e))
            if not isinstance(granted, Authorized):
                granted = Authorized(device=granted)
            device = granted.device
            try:
                size = device_size(device)
            except OSError as e:
                raise _Refusal("cannot open %s, the device of volume %s "
                               "(%s)" % (device, offer.target_volume,
                                         e.strerror))
            if size < offer.size:
                raise _Refusal(
                    "volume %s (%s) holds %d bytes, fewer than the %d "
                    "pushed; make it at least as big as the source"
                    % (offer.target_volume, device, size, offer.size))
            volume = self._volume(offer.target_volume)
            if not volume.lock.acquire(timeout=_VOLUME_BUSY_WAIT):
                raise _Refusal("volume %s is being pushed into by another "
                               "session; try again once it ends"
                               % (offer.target_volume,))
        except _Refusal as e:
            self._refused(peer_address, channel, str(e))
            return
        except (OSError, ValueError, _ProtocolError) as e:
            self._refused(peer_address, None, "the session failed before "
                          "it began: %s" % (e,))
            return
        try:
            channel.send_message({"accepted": True})
            if operation == _ROUND:
                self._round(channel, offer, device, volume, granted.blank,
                            bool(request.get("last")))
            else:
                self._verify(channel, offer, device, volume)
        except (OSError, ValueError, _ProtocolError) as e:
            log_message(message_type="blockmover:push:session-ended",
                        push_id=offer.push_id, peer=peer_address,
                        volume=offer.target_volume, reason=str(e))
        finally:
            volume.lock.release()

    def _volume(self, volume_id):
        with self._lock:
            return self._volumes.setdefault(volume_id, _TargetVolume())

    def _round(self, channel, offer, device, volume, blank=False,
               last=False):
        geometry = (offer.size, offer.block_size)
        scanning = time.monotonic()
        if volume.hashes is None or volume.device != device or \
                volume.geometry != geometry:
            volume.hashes = None
            if blank:
                # Made blank for this push: taken as zeros without reading
                # it. Were it not, the check at the end would say so, and
                # the round after reads it.
                hashes = [zero_hash(offer.block_length(i))
                          for i in range(offer.blocks)]
            else:
                hashes = block_hashes(device, offer.size, offer.block_size)
            volume.hashes = bytearray(b"".join(hashes))
            volume.device = device
            volume.geometry = geometry
        if last:
            # The source no longer changes: the device's read for the
            # check runs beside this round, and what the round writes is
            # read again at the check.
            volume.dirty = set()
            volume.reading = _ReadAhead(device, offer)
        channel.send_message({"blocks": offer.blocks})
        channel.connection.sendall(memoryview(volume.hashes))
        channel.connection.settimeout(_FRAME_TIMEOUT)
        started = time.monotonic()
        scanned = started - scanning
        with _DeviceWriter(device, offer, volume, self._on_received) \
                as writer:
            while True:
                kind, index, length, digest = channel.receive_frame()
                if kind == _END:
                    break
                if kind == _STILL_HERE:
                    continue
                if kind not in (_DATA, _ZERO) or index >= offer.blocks or \
                        length != offer.block_length(index):
                    raise _ProtocolError("a frame (%d, %d, %d) not of this "
                                         "offer" % (kind, index, length))
                if kind == _DATA:
                    buffer = writer.buffer()
                    channel.receive_into(buffer.view[:length])
                    # The source's hash of what TLS brought intact; the
                    # verification hashes the device itself.
                    writer.write(buffer, index, length, digest)
                else:
                    writer.write(None, index, length, zero_hash(length))
            written = writer.finish()
        channel.send_message({"written": written})
        log_message(message_type="blockmover:push:round-received",
                    push_id=offer.push_id, volume=offer.target_volume,
                    device=device, blocks=written,
                    seconds=time.monotonic() - started,
                    hashes_seconds=round(scanned, 3))

    def _verify(self, channel, offer, device, volume):
        hashes = None
        reading, volume.reading = volume.reading, None
        if reading is not None and volume.device == device and \
                volume.geometry == (offer.size, offer.block_size):
            # Read during the last round; the blocks it wrote, again now.
            hashes = reading.result()
            if hashes is not None:
                for index in sorted(volume.dirty):
                    hashes[index] = _block_hash(device, offer, index)
        if hashes is None:
            hashes = block_hashes(device, offer.size, offer.block_size)
        # Read just now from the device: the best there is to start the
        # next round from.
        volume.hashes = bytearray(b"".join(hashes))
        volume.device = device
        volume.geometry = (offer.size, offer.block_size)
        digest = digest_of(hashes)
        self._on_verified(offer, digest)
        channel.send_message({"digest": digest})


# --- the source's side ----------------------------------------------------

class _Session(object):
    """
    The source's connection to the receiver of ``offer``, open and
    accepted: ``channel``.
    """

    def __init__(self, offer, address, port, files, revoked, operation,
                 last=False):
        self._offer = offer
        self._where = "%s:%s" % (address, port)
        # What the source waits for now, for a timeout's message.
        self.waiting_for = "its answer"
        self.wait = _HANDSHAKE_TIMEOUT
        loaded = _Files(files)
        context = loaded.context(ssl.PROTOCOL_TLS_CLIENT)
        try:
            sock = socket.create_connection((address, port),
                                            timeout=_HANDSHAKE_TIMEOUT)
        except OSError as e:
            raise PushFailed("cannot connect to node %s at %s (%s); is its "
                             "agent receiving?" % (offer.target_node,
                                                   self._where, e))
        connection = sock
        try:
            _keep_alive(sock)
            try:
                connection = context.wrap_socket(sock)
            except ssl.SSLCertVerificationError as e:
                raise PushFailed("the server at %s is not a node of cluster "
                                 "%s: its certificate %s" % (
                                     self._where, loaded.cluster,
                                     e.verify_message))
            except (ssl.SSLError, OSError) as e:
                raise self._refused_or_failed(e)
            self.channel = _Channel(connection)
            self._check_peer(loaded, connection, revoked)
            try:
                self.channel.send_message({"operation": operation,
                                           "offer": offer.to_data(),
                                           "last": last})
                answer = self.channel.receive_message()
            except ssl.SSLError as e:
                # TLS 1.3: the server's verdict on this node's certificate
                # comes after the client's side of the handshake.
                raise self._refused_or_failed(e)
            except (OSError, _ProtocolError) as e:
                raise self.failed(e)
            if "refused" in answer:
                raise PushRefused("node %s refused the push: %s" % (
                    offer.target_node, answer["refused"]))
            self.wait = answer_wait(offer.size)
            connection.settimeout(self.wait)
        except BaseException:
            connection.close()
            raise

    def _refused_or_failed(self, error):
        if "ALERT" in str(getattr(error, "reason", "")):
            return PushRefused(
                "node %s at %s refused this node's certificate at the TLS "
                "handshake (%s); is it a node certificate of the target's "
                "cluster, not revoked?" % (self._offer.target_node,
                                           self._where, error.reason))
        return self.failed(error)

    def _check_peer(self, loaded, connection, revoked):
        try:
            holder = loaded.identity_of_peer(
                connection, revoked(), _now(time.time))
        except certificates.CertificateError as e:
            raise PushFailed("the server at %s is not to be believed: %s"
                             % (self._where, e))
        if holder.kind != certificates.NODE or \
                holder.name != self._offer.target_node:
            raise PushFailed(
                "the server at %s is %s, not node %s: push to the target "
                "node's address" % (self._where, holder,
                                    self._offer.target_node))

    def failed(self, error):
        if isinstance(error, TimeoutError):
            return PushFailed(
                "node %s at %s did not answer within %.0f s while this node "
                "waited for %s (push %s); is its agent running and its disk "
                "healthy? Push another round to finish it" % (
                    self._offer.target_node, self._where, self.wait,
                    self.waiting_for, self._offer.push_id))
        return PushFailed(
            "the push %s to node %s at %s was cut short (%s); push another "
            "round to finish it" % (self._offer.push_id,
                                    self._offer.target_node, self._where,
                                    error or "the connection was closed"))

    def close(self):
        self.channel.connection.close()


def answer_wait(size):
    """
    The seconds the source waits for each answer of the receiver's about
    a device of ``size`` bytes (some need the whole device read).
    """
    return _ANSWER_WAIT + size / _SLOWEST_READ


def _check_source(offer, device):
    try:
        size = device_size(device)
    except OSError as e:
        raise PushFailed("cannot read %s (%s)" % (device, e.strerror))
    if size < offer.size:
        raise PushFailed("%s holds %d bytes, fewer than the %d of the offer"
                         % (device, size, offer.size))


def send_round(offer, device, address, port, files, cap=None, progress=None,
               revoked=lambda: frozenset(), last=False):
    """
    Push one round of ``offer`` from ``device`` (a path) to the receiver
    at ``address``:``port``, presenting the node's ``files``
    (``blockmover.tls.TLSFiles``); the server must be node
    ``offer.target_node`` of the same cluster, not in ``revoked()``.
    Sends every block whose hash differs from the target's, at most
    ``cap`` bytes a second if given, telling ``progress(bytes_sent,
    bytes_scanned, size)`` now and then; returns once the target has
    written and synced them. ``last``: the round before ``verify``, the
    source no longer changing; the receiver reads its own device for the
    check meanwhile.

    :return: a ``RoundResult``.
    :raise PushRefused: if the receiver would not take it.
    :raise PushFailed: if the round did not finish.
    """
    _check_source(offer, device)
    started = time.monotonic()
    session = _Session(offer, address, port, files, revoked, _ROUND, last)
    try:
        return _push(session, offer, device, cap, progress, started)
    except (OSError, _ProtocolError) as e:
        raise session.failed(e)
    finally:
        session.close()


def _push(session, offer, device, cap, progress, started):
    channel = session.channel
    session.waiting_for = "the hashes of its device"
    answer = channel.receive_message()
    if answer.get("blocks") != offer.blocks:
        raise _ProtocolError("the receiver has %r blocks, not %d" % (
            answer.get("blocks"), offer.blocks))
    target = channel.receive_bytes(offer.blocks * HASH_SIZE)
    session.waiting_for = "it to take the blocks sent"
    bucket = None
    if cap is not None:
        bucket = TokenBucket(cap, max(offer.block_size, cap / 10.0),
                             time.monotonic())
    hashes = []
    blocks_sent = bytes_sent = scanned = 0
    told = last_sent = time.monotonic()
    with _BlockReader(device, offer.size, offer.block_size) as reader:
        for chunk in reader:
            offset = 0
            for i, digest in enumerate(chunk.hashes):
                index = chunk.first + i
                length = offer.block_length(index)
                if digest != target[index * HASH_SIZE:
                                    (index + 1) * HASH_SIZE]:
                    amount = 0 if chunk.zero[i] else length
                    if bucket is not None:
                        time.sleep(bucket.take(_FRAME.size + amount,
                                               time.monotonic()))
                    if chunk.zero[i]:
                        channel.send_frame(_ZERO, index, length, digest)
                    else:
                        channel.send_frame(_DATA, index, length, digest)
                        channel.connection.sendall(
                            chunk.view[offset:offset + length])
                    blocks_sent += 1
                    bytes_sent += amount
                    last_sent = time.monotonic()
                offset += length
                scanned += length
                now = time.monotonic()
                if progress is not None and now - told >= _PROGRESS_EVERY:
                    progress(bytes_sent, scanned, offer.size)
                    told = now
            hashes.extend(chunk.hashes)
            reader.release(chunk)
            if time.monotonic() - last_sent > _STILL_HERE_AFTER:
                channel.send_frame(_STILL_HERE)
                last_sent = time.monotonic()
    channel.send_frame(_END)
    session.waiting_for = "it to write and fsync the blocks sent"
    answer = channel.receive_message()
    if answer.get("written") != blocks_sent:
        raise _ProtocolError("the receiver wrote %r blocks of the %d sent"
                             % (answer.get("written"), blocks_sent))
    if progress is not None:
        progress(bytes_sent, scanned, offer.size)
    return RoundResult(blocks_sent=blocks_sent, bytes_sent=bytes_sent,
                       bytes_scanned=scanned,
                       seconds=time.monotonic() - started,
                       hashes=tuple(hashes))


def verify(offer, device, address, port, files, revoked=lambda: frozenset(),
           source_hashes=None):
    """
    Compare the digest of the first ``offer.size`` bytes of ``device``
    with the digest the receiver computes of its device, each read in
    full at the same time. ``source_hashes`` (a ``RoundResult.hashes``)
    are the source's block hashes as a round just read the whole device,
    unchanged since (nothing has it mounted): the source's digest is taken
    from them rather than from reading it again.

    :return: a ``Verification``.
    :raise PushRefused: if the receiver would not take it.
    :raise PushFailed: if it did not finish.
    """
    _check_source(offer, device)
    if source_hashes is not None and len(source_hashes) != offer.blocks:
        raise PushFailed("the source's hashes name %d blocks, not the %d "
                         "of the offer" % (len(source_hashes), offer.blocks))
    session = _Session(offer, address, port, files, revoked, _VERIFY)
    try:
        if source_hashes is not None:
            source = digest_of(source_hashes)
        else:
            source = digest_of(block_hashes(device, offer.size,
                                            offer.block_size))
        session.waiting_for = "its digest of its device"
        answer = session.channel.receive_message()
        if not isinstance(answer.get("digest"), str):
            raise _ProtocolError("an answer without a digest")
        return Verification(source_digest=source,
                            target_digest=answer["digest"])
    except (OSError, _ProtocolError) as e:
        raise session.failed(e)
    finally:
        session.close()
