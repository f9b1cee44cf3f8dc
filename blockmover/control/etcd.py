"""
A client of etcd 3.4 through its JSON gateway (``/v3/``) on Twisted: every
call returns a Deferred and the reactor never waits.

The gateway speaks etcd's gRPC messages as JSON: every call is a POST,
keys and values are base64, 64-bit numbers are strings and fields at their
zero value are left out. ``/v3/watch`` and ``/v3/lease/keepalive`` answer
with a stream of JSON objects, one a line, each ``{"result": ...}`` (or
``{"error": ...}``).

The client knows several members (``endpoints``) and speaks mutual TLS
with each. A call goes to the member that answered last; when that one
cannot be reached, or answers that it cannot serve now (no leader, a
request timed out), the call goes to the next, each tried once. A write
whose answer was lost may have been applied before it goes to the next
member: every write blockmover makes is safe to repeat (a put of the same
value; a transaction whose compares see its own earlier success, such as
a leader key that already holds the caller's lease).
"""

import base64
import json

from eliot import log_message
from pyrsistent import PClass, field, pvector_field
import treq
from twisted.internet import ssl
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from blockmover import certificates
# The control client's plumbing, reused: a body written at once, on the
# client's reactor, and TLS endpoints whose timers run on it too.
from blockmover.client import _Body, _TLSEndpoints
from blockmover.poll import Backoff

# gRPC status codes (google.golang.org/grpc/codes) etcd answers with when a
# member cannot serve a request now but another one may: no leader, a
# request timed out, too many requests, a member stopping.
_DEADLINE_EXCEEDED = 4
_RESOURCE_EXHAUSTED = 8
_UNAVAILABLE = 14
_TRY_ANOTHER = (_DEADLINE_EXCEEDED, _RESOURCE_EXHAUSTED, _UNAVAILABLE)

# Every request asks, as gRPC metadata through the gateway, to be refused
# at once by a member that knows no leader ("etcdserver: no leader"), not
# left to wait for one: the call goes to another member meanwhile, and a
# watch on a member cut off from the others ends, to go on elsewhere.
_HEADERS = {"Content-Type": ["application/json"],
            "Grpc-Metadata-Hasleader": ["true"]}

# A watch cut off (its member died, its connection broke) starts again on
# the next member after these pauses, from the revision after the last it
# delivered, so no event is lost or delivered twice.
WATCH_RETRY = Backoff(initial=0.05, factor=2.0, maximum=2.0)


class EtcdError(Exception):
    """
    etcd answered, and refused: ``message`` is etcd's own (say
    ``etcdserver: requested lease not found``), ``code`` its gRPC status.
    """
    def __init__(self, message, code=None):
        self.message = message
        self.code = code
        Exception.__init__(self, message)


class EtcdUnavailable(EtcdError):
    """
    No member of etcd could serve a request: ``reasons`` says, for each
    endpoint tried, why not (its own message where it answered).
    """
    def __init__(self, what, reasons):
        self.reasons = list(reasons)
        EtcdError.__init__(
            self, "etcd could not %s: %s; check that most of etcd's members "
            "run and reach each other (it needs a majority to read and "
            "write)" % (what, "; ".join("%s: %s" % pair
                                          for pair in self.reasons)))


class WatchCanceled(EtcdError):
    """
    etcd ended a watch (``compact_revision`` set when the revision it was
    to start from was compacted away: read the keys again, then watch from
    the revision of that read).
    """
    def __init__(self, message, compact_revision=0):
        self.compact_revision = compact_revision
        EtcdError.__init__(self, message)


def _b64(data):
    return base64.b64encode(data).decode("ascii")


def _unb64(text):
    return base64.b64decode(text) if text else b""


def _bytes(key):
    return key.encode("utf-8") if isinstance(key, str) else key


def prefix_end(prefix):
    """
    The ``range_end`` of every key starting with ``prefix`` (bytes): the
    prefix with its last byte below 0xff increased, the bytes after it
    dropped; ``b"\\0"`` (every key) when there is none.
    """
    for i in reversed(range(len(prefix))):
        if prefix[i] < 0xff:
            return prefix[:i] + bytes([prefix[i] + 1])
    return b"\0"


# --- records ------------------------------------------------------------


class KeyValue(PClass):
    """
    One key as etcd holds it: its ``value``, the revisions that created
    and last modified it, how many times it was written since it was
    created (``version``), and the lease it is attached to (0: none).
    """
    key = field(type=bytes, mandatory=True)
    value = field(type=bytes, mandatory=True, initial=b"")
    create_revision = field(type=int, mandatory=True, initial=0)
    mod_revision = field(type=int, mandatory=True, initial=0)
    version = field(type=int, mandatory=True, initial=0)
    lease = field(type=int, mandatory=True, initial=0)

    @classmethod
    def from_json(cls, data):
        return cls(key=_unb64(data.get("key")),
                   value=_unb64(data.get("value")),
                   create_revision=int(data.get("create_revision", 0)),
                   mod_revision=int(data.get("mod_revision", 0)),
                   version=int(data.get("version", 0)),
                   lease=int(data.get("lease", 0)))


class Range(PClass):
    """
    What a read found: the keys (in key order) and the store's
    ``revision`` when it read them (watch from ``revision + 1`` to see
    every change after).
    """
    revision = field(type=int, mandatory=True)
    kvs = pvector_field(KeyValue)

    @classmethod
    def from_json(cls, data, revision=None):
        if revision is None:
            revision = _revision(data)
        return cls(revision=revision,
                   kvs=[KeyValue.from_json(kv) for kv in data.get("kvs", ())])

    @property
    def first(self):
        """
        The first key found, None when none was.
        """
        return self.kvs[0] if self.kvs else None


class Event(PClass):
    """
    A change a watch saw: ``type`` ``PUT`` or ``DELETE``, and the key after
    it (a deleted key has only its name and ``mod_revision``, the revision
    of the delete).
    """
    type = field(type=str, mandatory=True)
    kv = field(type=KeyValue, mandatory=True)


class Lease(PClass):
    """
    A lease etcd granted: its ``id`` and ``ttl`` in seconds (etcd may grant
    more than was asked, never less).
    """
    id = field(type=int, mandatory=True)
    ttl = field(type=int, mandatory=True)


class MemberStatus(PClass):
    """
    How one member is: its etcd ``version``, whether it leads the etcd
    cluster now, and the revision it has applied.
    """
    version = field(type=str, mandatory=True)
    leader = field(type=bool, mandatory=True)
    revision = field(type=int, mandatory=True)

    @classmethod
    def from_json(cls, data):
        header = data.get("header", {})
        member = header.get("member_id")
        return cls(version=str(data.get("version", "")),
                   leader=member is not None
                   and data.get("leader") == member,
                   revision=int(header.get("revision", 0)))


class TxnResult(PClass):
    """
    What a transaction did: whether its compares held (``succeeded``, so
    its success operations ran, else its failure operations), the
    revision after it, and the ``Range`` of each of its ``Get`` operations
    that ran, in order.
    """
    succeeded = field(type=bool, mandatory=True)
    revision = field(type=int, mandatory=True)
    ranges = pvector_field(Range)


def _revision(data):
    return int(data.get("header", {}).get("revision", 0))


# --- the operations of a transaction --------------------------------------


class Compare(PClass):
    """
    One condition of a transaction: the key's ``target`` (``VALUE``,
    ``MOD``, ``CREATE``, ``VERSION``, ``LEASE``) compared (``EQUAL``,
    ``NOT_EQUAL``, ``GREATER``, ``LESS``) with ``operand``. A key that
    does not exist has every revision, version and lease 0 and no value.
    """
    key = field(type=bytes, mandatory=True)
    target = field(type=str, mandatory=True)
    result = field(type=str, mandatory=True, initial="EQUAL")
    operand = field(mandatory=True)

    def to_json(self):
        name = {"VALUE": "value", "MOD": "mod_revision",
                "CREATE": "create_revision", "VERSION": "version",
                "LEASE": "lease"}[self.target]
        operand = (_b64(self.operand) if self.target == "VALUE"
                   else str(self.operand))
        return {"key": _b64(self.key), "target": self.target,
                "result": self.result, name: operand}


def created_at(key, revision):
    """
    The key was created at ``revision``; 0: the key does not exist.
    """
    return Compare(key=_bytes(key), target="CREATE", operand=revision)


def modified_at(key, revision):
    """
    The key was last modified at ``revision``; 0: it does not exist.
    """
    return Compare(key=_bytes(key), target="MOD", operand=revision)


def value_is(key, value):
    """
    The key holds ``value`` (bytes).
    """
    return Compare(key=_bytes(key), target="VALUE", operand=_bytes(value))


def held_by(key, lease):
    """
    The key is attached to lease ``lease`` (an id).
    """
    return Compare(key=_bytes(key), target="LEASE", operand=lease)


class Get(PClass):
    """
    Read ``key``, or with ``prefix`` every key starting with it.
    """
    key = field(type=bytes, mandatory=True)
    prefix = field(type=bool, mandatory=True, initial=False)
    # Only the keys, their values left out (empty).
    keys_only = field(type=bool, mandatory=True, initial=False)

    def to_json(self):
        request = {"key": _b64(self.key)}
        if self.prefix:
            request["range_end"] = _b64(prefix_end(self.key))
        if self.keys_only:
            request["keys_only"] = True
        return request

    def to_op(self):
        return {"request_range": self.to_json()}


class Put(PClass):
    """
    Write ``value`` to ``key``, attached to ``lease`` (0: none; the key
    goes with the lease).
    """
    key = field(type=bytes, mandatory=True)
    value = field(type=bytes, mandatory=True)
    lease = field(type=int, mandatory=True, initial=0)

    def to_json(self):
        request = {"key": _b64(self.key), "value": _b64(self.value)}
        if self.lease:
            request["lease"] = str(self.lease)
        return request

    def to_op(self):
        return {"request_put": self.to_json()}


class Delete(PClass):
    """
    Delete ``key``, or with ``prefix`` every key starting with it.
    """
    key = field(type=bytes, mandatory=True)
    prefix = field(type=bool, mandatory=True, initial=False)

    def to_json(self):
        return Get(key=self.key, prefix=self.prefix).to_json()

    def to_op(self):
        return {"request_delete_range": self.to_json()}


def get(key, prefix=False, keys_only=False):
    return Get(key=_bytes(key), prefix=prefix, keys_only=keys_only)


def put(key, value, lease=0):
    return Put(key=_bytes(key), value=_bytes(value), lease=lease)


def delete(key, prefix=False):
    return Delete(key=_bytes(key), prefix=prefix)


# --- TLS ------------------------------------------------------------------


@implementer(IPolicyForHTTPS)
class EtcdTLS(object):
    """
    Mutual TLS with etcd's members: presents the certificate of ``files``
    (``blockmover.tls.TLSFiles``), believes a member only with a
    certificate of ``files.ca`` for the address dialled.

    :raise EtcdError: a file cannot be read or is not PEM.
    """

    def __init__(self, files):
        try:
            with open(files.ca, "rb") as f:
                ca = ssl.Certificate.loadPEM(f.read())
            with open(files.certificate, "rb") as f:
                certificate = certificates.load_certificate(f.read())
            with open(files.key, "rb") as f:
                key = certificates.load_key(f.read())
        except (OSError, ValueError, certificates.CertificateError) as e:
            raise EtcdError("cannot use the TLS files for etcd (%s): %s; "
                            "give etcd's CA and a client certificate it "
                            "trusts" % (files.describe(), e))
        self._trust = ssl.trustRootFromCertificates([ca])
        self._client = {"certificate": certificate, "privateKey": key}

    def creatorForNetloc(self, hostname, port):
        return ssl.optionsForClientTLS(
            hostname.decode("idna"), trustRoot=self._trust,
            extraCertificateOptions=dict(self._client))


# --- the client -------------------------------------------------------------


def _reason(failure, timeout):
    """
    Why a member gave no answer, for a person.
    """
    if failure.check(ConnectionRefusedError):
        return "connection refused"
    if failure.check(CancelledError) or _cancelled(failure.value):
        return "no answer within %g seconds" % (timeout,)
    reasons = getattr(failure.value, "reasons", None)
    if reasons:
        return "the connection broke: " + "; ".join(
            r.getErrorMessage() for r in reasons)
    return failure.getErrorMessage() or failure.type.__name__


def _cancelled(error):
    return any(r.check(CancelledError)
               for r in getattr(error, "reasons", None) or ())


class EtcdClient(object):
    """
    A client of the etcd members at ``endpoints`` (``https://HOST:PORT``,
    in order of preference), presenting ``tls`` (an ``EtcdTLS``).

    :param timeout: seconds one member is given to answer a call before
        it goes to the next.
    """

    def __init__(self, endpoints, tls, reactor=None, timeout=5.0):
        if reactor is None:
            from twisted.internet import reactor
        if not endpoints:
            raise ValueError("give at least one etcd endpoint")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self._reactor = reactor
        self._current = 0
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        agent = Agent.usingEndpointFactory(
            reactor, _TLSEndpoints(reactor, tls), pool=self._pool)
        self._http = treq.client.HTTPClient(agent)
        self._watches = set()

    def close(self):
        """
        End every watch and close the pooled connections; a Deferred
        firing when they are.
        """
        for watch in list(self._watches):
            watch.stop()
        return self._pool.closeCachedConnections()

    # --- keys -------------------------------------------------------------

    def range(self, key, prefix=False, timeout=None, keys_only=False):
        """
        :return: Deferred firing with the ``Range`` of ``key`` (bytes or
            str), or with ``prefix`` of every key starting with it; with
            ``keys_only``, their values left empty.
        """
        d = self._call("read %r" % (key,), "/v3/kv/range",
                       get(key, prefix, keys_only).to_json(), timeout)
        d.addCallback(Range.from_json)
        return d

    def get(self, key, timeout=None):
        """
        :return: Deferred firing with ``key``'s ``KeyValue``, None when it
            does not exist.
        """
        d = self.range(key, timeout=timeout)
        d.addCallback(lambda found: found.first)
        return d

    def put(self, key, value, lease=0, timeout=None):
        """
        Write ``value`` to ``key`` (attached to ``lease`` unless 0).

        :return: Deferred firing with the revision of the write.
        """
        d = self._call("write %r" % (key,), "/v3/kv/put",
                       put(key, value, lease).to_json(), timeout)
        d.addCallback(_revision)
        return d

    def delete(self, key, prefix=False, timeout=None):
        """
        Delete ``key``, or with ``prefix`` every key starting with it.

        :return: Deferred firing with how many keys were deleted.
        """
        d = self._call("delete %r" % (key,), "/v3/kv/deleterange",
                       delete(key, prefix).to_json(), timeout)
        d.addCallback(lambda data: int(data.get("deleted", 0)))
        return d

    def txn(self, compares, success, failure=(), timeout=None):
        """
        One transaction: if every one of ``compares`` holds, do the
        operations of ``success`` (``Get``, ``Put``, ``Delete``), else
        those of ``failure``, all at one revision.

        :return: Deferred firing with a ``TxnResult``.
        """
        body = {"compare": [c.to_json() for c in compares],
                "success": [op.to_op() for op in success],
                "failure": [op.to_op() for op in failure]}
        d = self._call("run a transaction", "/v3/kv/txn", body, timeout)
        d.addCallback(_txn_result)
        return d

    # --- leases -------------------------------------------------------------

    def grant(self, ttl, timeout=None):
        """
        A new lease of ``ttl`` seconds.

        :return: Deferred firing with its ``Lease``.
        """
        d = self._call("grant a lease", "/v3/lease/grant",
                       {"TTL": str(int(ttl))}, timeout)

        def granted(data):
            if data.get("error"):
                raise EtcdError(data["error"])
            return Lease(id=int(data["ID"]), ttl=int(data["TTL"]))
        d.addCallback(granted)
        return d

    def keepalive(self, lease, timeout=None):
        """
        Renew ``lease`` (an id) once, for its whole TTL again.

        :return: Deferred firing with the TTL it has now, 0 when etcd no
            longer has it (it expired or was revoked).
        """
        d = self._call("renew lease %x" % (lease,), "/v3/lease/keepalive",
                       {"ID": str(lease)}, timeout, stream=True)
        d.addCallback(lambda data: int(data.get("TTL", 0)))
        return d

    def revoke(self, lease, timeout=None):
        """
        Revoke ``lease``: every key attached to it is deleted. A lease etcd
        no longer has is revoked already.

        :return: Deferred firing with None.
        """
        d = self._call("revoke lease %x" % (lease,), "/v3/lease/revoke",
                       {"ID": str(lease)}, timeout)
        d.addCallbacks(lambda _: None, _unless_lease_gone)
        return d

    # --- members ------------------------------------------------------------

    def member_status(self, endpoint, timeout=None):
        """
        Ask the member at ``endpoint`` (one of ``endpoints``) alone how it
        is.

        :return: Deferred firing with a ``MemberStatus``; failing with
            ``EtcdError`` when it does not answer.
        """
        index = self.endpoints.index(endpoint.rstrip("/"))
        d = self._post(index, "/v3/maintenance/status", {}, timeout)
        d.addCallback(_answer, False)

        def unreachable(failure):
            if failure.check(EtcdError):
                return failure
            raise EtcdError(_reason(failure, self.timeout if timeout is None
                                    else timeout))
        d.addCallbacks(MemberStatus.from_json, unreachable)
        return d

    # --- watches ------------------------------------------------------------

    def watch(self, key, on_events, prefix=False, start_revision=None):
        """
        Watch ``key`` (with ``prefix``, every key starting with it) from
        ``start_revision`` (None: changes after etcd has set the watch
        up, so a write racing this call may be missed: pass the revision
        after a read to see every change since it), calling
        ``on_events(events)`` with each batch of ``Event``s in revision
        order. The watch goes on across members until ``stop()``: cut off,
        it starts again on the next member after the last revision it
        delivered.

        :return: the ``Watch``.
        """
        watch = Watch(self, _bytes(key), prefix, start_revision, on_events)
        self._watches.add(watch)
        watch.done.addBoth(self._forget_watch, watch)
        watch._start()
        return watch

    def _forget_watch(self, result, watch):
        self._watches.discard(watch)
        return result

    # --- plumbing ---------------------------------------------------------

    def _post(self, index, path, body, timeout, unbuffered=False):
        return self._http.request(
            "POST", self.endpoints[index] + path,
            data=_Body(json.dumps(body).encode("utf-8")),
            headers=_HEADERS,
            reactor=self._reactor, unbuffered=unbuffered,
            timeout=self.timeout if timeout is None else timeout)

    def _call(self, what, path, body, timeout, stream=False):
        """
        POST ``body`` to ``path`` of each member in turn from the current
        one until one answers; its answer's JSON, or the first ``result``
        of a stream.
        """
        done = Deferred()
        reasons = []
        start = self._current

        def attempt(n):
            if n == len(self.endpoints):
                done.errback(EtcdUnavailable(what, reasons))
                return
            index = (start + n) % len(self.endpoints)
            d = self._post(index, path, body, timeout)
            d.addCallback(_answer, stream)
            d.addCallbacks(answered, failed, callbackArgs=(index,),
                           errbackArgs=(index, n))

        def answered(data, index):
            self._current = index
            done.callback(data)

        def failed(failure, index, n):
            if failure.check(EtcdError) and not _try_another(failure.value):
                done.errback(failure)
                return
            reasons.append((self.endpoints[index], _reason(
                failure, self.timeout if timeout is None else timeout)))
            log_message(message_type="blockmover:etcd:member-failed",
                        endpoint=self.endpoints[index], what=what,
                        reason=reasons[-1][1])
            attempt(n + 1)

        attempt(0)
        return done


def _try_another(error):
    return isinstance(error, EtcdUnavailable) or error.code in _TRY_ANOTHER


def _unless_lease_gone(failure):
    failure.trap(EtcdError)
    if "lease not found" in failure.value.message:
        return None
    return failure


def _answer(response, stream):
    d = response.content()
    d.addCallback(_decode, response.code, stream)
    return d


def _error(data, code):
    """
    The ``EtcdError`` of an answer's ``error`` (a unary call's: text and
    ``code``; a stream's: an object).
    """
    error = data.get("error")
    if isinstance(error, dict):
        return EtcdError(error.get("message") or json.dumps(error),
                         error.get("grpc_code", error.get("code")))
    return EtcdError(data.get("message") or str(error), data.get("code"))


def _decode(content, status, stream):
    try:
        text = content.decode("utf-8")
        if stream:
            text = (text.strip().splitlines() or ["{}"])[0]
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        raise EtcdError("etcd answered %d with no JSON: %r"
                        % (status, content[:200]), _UNAVAILABLE)
    if not isinstance(data, dict):
        raise EtcdError("etcd answered %d with %r" % (status, data))
    if "error" in data:
        raise _error(data, data.get("code"))
    if status != 200:
        raise EtcdError("etcd answered %d" % (status,),
                        _UNAVAILABLE if status >= 500 else None)
    return data.get("result", {}) if stream else data


def _txn_result(data):
    revision = _revision(data)
    ranges = [Range.from_json(r["response_range"], revision)
              for r in data.get("responses", ()) if "response_range" in r]
    return TxnResult(succeeded=bool(data.get("succeeded", False)),
                     revision=revision, ranges=ranges)


# --- watch ----------------------------------------------------------------


class Watch(object):
    """
    One watch of ``EtcdClient.watch``. ``done`` fires with None once it was
    stopped, or fails with ``WatchCanceled`` when etcd ended it (the
    revision it was to start from was compacted).

    :ivar revision: the revision it goes on from: after the last event it
        delivered, or after the store's revision when it started.
    """

    def __init__(self, client, key, prefix, start_revision, on_events):
        self._client = client
        self._key = key
        self._prefix = prefix
        self._on_events = on_events
        self.revision = start_revision
        self.done = Deferred()
        self._stopped = False
        self._attempt = 0
        self._index = client._current
        self._request = None
        self._stream = None
        self._retry = None

    def stop(self):
        """
        End the watch; no event is delivered after.
        """
        if self._stopped:
            return
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._stream is not None:
            self._stream.close()
        if self._request is not None:
            self._request.cancel()
        self.done.callback(None)

    def _start(self):
        if self._stopped:
            return
        create = get(self._key, self._prefix).to_json()
        if self.revision is not None:
            create["start_revision"] = str(self.revision)
        self._request = self._client._post(
            self._index, "/v3/watch", {"create_request": create},
            None, unbuffered=True)
        self._request.addCallbacks(self._connected, self._cut)

    def _connected(self, response):
        self._request = None
        if self._stopped:
            response.deliverBody(_Discard())
            return
        if response.code != 200:
            d = response.content()
            d.addBoth(lambda _: self._cut(None))
            return
        self._stream = _Lines(self._line, self._cut)
        response.deliverBody(self._stream)

    def _line(self, line):
        try:
            data = json.loads(line)
        except ValueError:
            return
        if "error" in data:
            stream = self._stream
            self._cut(None)
            stream.close()
            return
        result = data.get("result", {})
        if result.get("canceled"):
            self._stopped = True
            self._stream.close()
            self.done.errback(WatchCanceled(
                "etcd canceled the watch of %r: %s" % (
                    self._key, result.get("cancel_reason") or "compacted"),
                int(result.get("compact_revision", 0))))
            return
        self._attempt = 0
        if result.get("created") and self.revision is None:
            self.revision = _revision(result) + 1
        events = [Event(type=e.get("type", "PUT"),
                        kv=KeyValue.from_json(e.get("kv", {})))
                  for e in result.get("events", ())]
        if events:
            self.revision = events[-1].kv.mod_revision + 1
            self._on_events(events)

    def _cut(self, reason):
        self._request = None
        self._stream = None
        if self._stopped:
            return
        delay = WATCH_RETRY.delay(self._attempt)
        self._attempt += 1
        self._index = (self._index + 1) % len(self._client.endpoints)
        self._retry = self._client._reactor.callLater(delay, self._start)


class _Lines(Protocol):
    """
    A streamed body as its lines, each given to ``on_line`` as it
    completes; ``on_end`` when the body ends.
    """

    def __init__(self, on_line, on_end):
        self._on_line = on_line
        self._on_end = on_end
        self._buffer = b""
        self._closed = False

    def dataReceived(self, data):
        self._buffer += data
        while not self._closed and b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            if line.strip():
                self._on_line(line)

    def connectionLost(self, reason):
        if not self._closed:
            self._closed = True
            self._on_end(reason)

    def close(self):
        self._closed = True
        if self.transport is not None:
            self.transport.stopProducing()


class _Discard(Protocol):
    def connectionMade(self):
        self.transport.stopProducing()

