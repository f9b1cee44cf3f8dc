"""
The control service's records on etcd, for a service run as several
replicas: the same records as its files in the state directory (the
configuration, ``blockmover.control.store``; the failure records,
``failurestore``; the pushes, ``pushes.PushStore``), each the same JSON in
one key under the cluster's prefix::

    /blockmover/<cluster>/configuration
    /blockmover/<cluster>/failures
    /blockmover/<cluster>/pushes
    /blockmover/<cluster>/leader       the leader key (``election``)

Only the leader writes, and only while it leads: every save is one
transaction that puts the record only if the leader key is still the one
this replica created, on its lease (``election.Leadership.compares``). A
replica that lost the lead (paused, cut off from etcd, its lease ended)
without knowing it yet writes nothing: its save fails with ``NotLeader``.

How the control service uses them: the file stores are blocking, loaded
in place at the start and saved in the service's writer thread. Here both
return Deferreds on the reactor: a replica elected to lead reads every
record (``EtcdStore.load``) before it makes its service, and hands it each
record with its value read (``Loaded``), whose ``save`` the service calls
on the reactor (``ControlService.save_record``). Saves of one record are
written in the order they were called, as the writer thread keeps them.
"""

import json

from pyrsistent import PClass, field, pmap
from twisted.internet.defer import DeferredLock, gatherResults

from blockmover.control import failurestore, push_rules, pushes, store
from blockmover.control.errors import StoreError
from blockmover.control.etcd import EtcdError, get, put
from blockmover.control.failurestore import FailureRecords
from blockmover.control.election import Leader
from blockmover.control.store import StoredConfiguration
from blockmover.model import to_data

PREFIX = "/blockmover/"


def cluster_prefix(cluster):
    """
    The prefix of every key of ``cluster`` (bytes).
    """
    return (PREFIX + cluster + "/").encode("utf-8")


def leader_key(cluster):
    """
    The key whose holder leads ``cluster``'s control service.
    """
    return cluster_prefix(cluster) + b"leader"


class NotLeader(StoreError):
    """
    A save was refused, nothing written: this replica does not lead (any
    more); the leader, if one is known, does the writing.
    """


class UnknownOutcome(StoreError):
    """
    A save got no answer: etcd may have applied it, or may yet. The
    replica that made it no longer knows what etcd holds, and ends its
    term (``Loaded``) so that the next leader reads it.
    """


class Codec(PClass):
    """
    How one record is kept: its key's ``name`` under the cluster's prefix,
    what it is for a person, the JSON of a value, the value of a JSON
    (raising on a bad one) and the value when nothing was stored yet.
    """
    name = field(type=str, mandatory=True)
    what = field(type=str, mandatory=True)
    to_data = field(mandatory=True)
    from_data = field(mandatory=True)
    empty = field(mandatory=True)


def _configuration_data(stored):
    return dict(version=store.FORMAT_VERSION, generation=stored.generation,
                counter=stored.counter, cluster_yml=stored.cluster_yml,
                app_yml=stored.app_yml, cluster_path=stored.cluster_path,
                app_path=stored.app_path)


def _check_version(data, version):
    if not isinstance(data, dict) or data.get("version") != version:
        raise ValueError("format version %r, not %d" % (
            data.get("version") if isinstance(data, dict) else None,
            version))


def _configuration(data):
    _check_version(data, store.FORMAT_VERSION)
    return StoredConfiguration(
        generation=data["generation"], counter=data["counter"],
        cluster_yml=data["cluster_yml"], app_yml=data["app_yml"],
        cluster_path=data["cluster_path"], app_path=data["app_path"])


def _failures(data):
    _check_version(data, failurestore.FORMAT_VERSION)
    return FailureRecords.create({"nodes": data["nodes"],
                                  "failovers": data["failovers"],
                                  "removed": data["removed"]})


def _pushes(data):
    _check_version(data, pushes.FORMAT_VERSION)
    return pmap({dataset: push_rules.PushRecord.create(record)
                 for dataset, record in data["pushes"].items()})


CONFIGURATION = Codec(
    name="configuration", what="the configuration",
    to_data=_configuration_data, from_data=_configuration, empty=None)
FAILURES = Codec(
    name="failures", what="the node failure records",
    to_data=lambda records: dict(to_data(records),
                                 version=failurestore.FORMAT_VERSION),
    from_data=_failures, empty=FailureRecords())
PUSHES = Codec(
    name="pushes", what="the push records",
    to_data=lambda records: {"version": pushes.FORMAT_VERSION,
                             "pushes": {d: to_data(r)
                                        for d, r in records.items()}},
    from_data=_pushes, empty=pmap())


class EtcdRecord(object):
    """
    One record of the control service in one etcd key, kept by ``codec``.
    """

    def __init__(self, client, cluster, codec, leadership):
        self._client = client
        self._codec = codec
        self._leadership = leadership
        self._lock = DeferredLock()
        self._leader_key = leader_key(cluster)
        self.key = cluster_prefix(cluster) + codec.name.encode()
        self.name = codec.name

    def load(self):
        """
        :return: Deferred firing with the stored value (the codec's empty
            one if none yet); failing with ``StoreError`` when etcd cannot
            be read or holds something this release cannot read.
        """
        d = self._client.get(self.key)
        d.addCallbacks(self._decode, self._unavailable,
                       errbackArgs=("read",))
        return d

    def _decode(self, kv):
        if kv is None:
            return self._codec.empty
        try:
            return self._codec.from_data(json.loads(kv.value))
        except Exception as e:
            # Never guessed around, like the files: these records say what
            # runs where and which nodes are proven down.
            raise StoreError(
                "%s in etcd (key %s) cannot be read (%s); restore it from "
                "a backup of etcd" % (self._codec.what,
                                      self.key.decode(), e))

    def save(self, value):
        """
        Replace the stored value with ``value``, if this replica leads.

        :return: Deferred firing with the revision of the write; failing
            with ``NotLeader`` (nothing written) when this replica does not
            hold the leader key, ``StoreError`` when etcd cannot be
            written (the old value may stay, or the new one be written:
            read it again).
        """
        data = json.dumps(self._codec.to_data(value), sort_keys=True)
        return self._lock.run(self._save, data.encode("utf-8"))

    def _save(self, data):
        leadership = self._leadership()
        if leadership is None:
            raise NotLeader("%s not saved: this replica does not lead the "
                            "control service" % (self._codec.what,))
        d = self._client.txn(leadership.compares(), [put(self.key, data)],
                             [get(self._leader_key)])
        d.addCallbacks(self._saved, self._unavailable,
                       errbackArgs=("write",))
        return d

    def _saved(self, result):
        if result.succeeded:
            return result.revision
        kv = result.ranges[0].first if result.ranges else None
        leader = None if kv is None else Leader.from_bytes(kv.value)
        raise NotLeader(
            "%s not saved: this replica no longer leads the control "
            "service (%s)" % (self._codec.what,
                              "nobody leads now" if leader is None
                              else "%s at %s leads" % (leader.name,
                                                       leader.address)))

    def _unavailable(self, failure, doing):
        failure.trap(EtcdError)
        if doing == "write":
            raise UnknownOutcome(
                "cannot write %s in etcd: %s; etcd may still apply it once "
                "most of its members answer again, so read it back before "
                "trying again" % (self._codec.what, failure.value))
        raise StoreError("cannot %s %s in etcd: %s" % (
            doing, self._codec.what, failure.value))


class Loaded(object):
    """
    An ``EtcdRecord`` with the ``value`` read from it before the service
    started: what the service's file stores are to it, ``load`` answering
    at once and ``save`` the record's (a Deferred, ``asynchronous``).
    """
    asynchronous = True

    def __init__(self, record, value, unknown=lambda reason: None):
        self._record = record
        self._value = value
        self._unknown = unknown
        # Where it is, in messages about what it holds.
        self.path = "etcd (key %s)" % (record.key.decode("utf-8"),)
        self.name = record.name

    def load(self):
        return self._value

    def save(self, value):
        """
        ``EtcdRecord.save``; on an ``UnknownOutcome``, ``unknown`` is told
        why (a replica ends its term) before the failure goes on.
        """
        d = self._record.save(value)

        def unknown(failure):
            if failure.check(UnknownOutcome):
                self._unknown(str(failure.value))
            return failure
        return d.addErrback(unknown)


class EtcdStore(object):
    """
    The records of ``cluster``'s control service in etcd through
    ``client`` (an ``EtcdClient``): ``configuration``, ``failures`` and
    ``pushes``, each an ``EtcdRecord`` with ``load`` and ``save``.

    :param leadership: a callable returning this replica's
        ``election.Leadership`` while it leads, None otherwise (such as
        ``lambda: election.leadership``); every save checks it, and etcd
        checks it again.
    """

    def __init__(self, client, cluster, leadership):
        self.cluster = cluster
        self.configuration = EtcdRecord(client, cluster, CONFIGURATION,
                                        leadership)
        self.failures = EtcdRecord(client, cluster, FAILURES, leadership)
        self.pushes = EtcdRecord(client, cluster, PUSHES, leadership)

    def load(self, unknown=lambda reason: None):
        """
        Read every record.

        :param unknown: what each record's ``Loaded`` tells of a save
            whose outcome is unknown.
        :return: Deferred firing with ``(configuration, failures,
            pushes)``, each a ``Loaded``; failing with ``StoreError``
            when one cannot be read.
        """
        records = (self.configuration, self.failures, self.pushes)
        d = gatherResults([r.load() for r in records], consumeErrors=True)
        d.addErrback(lambda failure: failure.value.subFailure)
        d.addCallback(lambda values: tuple(
            Loaded(record, value, unknown)
            for record, value in zip(records, values)))
        return d
