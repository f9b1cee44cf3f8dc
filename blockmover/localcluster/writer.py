"""
A writer that keeps inserting documents into the MongoDB-compatible server
of one node, each acknowledged only once it is in the journal (``w: 1,
j: true``), and remembers every acknowledgement with the time and the
node that gave it: what a failover must never lose, and the proof that no
two nodes acknowledged writes at once.
"""

import threading
import time

from blockmover.localcluster.database import DATABASE, _client

# The writer's collection, apart from the documents the demo writes.
COLLECTION = "writes"
FIRST_ID = 1


class Acknowledged(object):
    """
    One acknowledged write: the document's id, the node (address) that
    acknowledged it, and when (``time.monotonic()``).
    """
    def __init__(self, document_id, address, at):
        self.document_id = document_id
        self.address = address
        self.at = at

    def __repr__(self):
        return "Acknowledged(%d by %s at %.3f)" % (self.document_id,
                                                   self.address, self.at)


class Writer(object):
    """
    A thread writing to ``address`` until ``stop``, one document at a
    time, each with the next id from ``first_id``. A write that fails is
    not acknowledged and its id is not used again; the writer keeps trying
    (after ``pause`` seconds, each try waiting ``timeout`` seconds at most
    for a server) so that it writes again as soon as a server answers at
    that address.

    With ``rate``, it writes at most that many documents a second (on
    schedule: a late one is not made up), each carrying ``payload`` bytes.
    """

    def __init__(self, address, first_id=FIRST_ID, pause=0.05, timeout=2.0,
                 rate=None, payload=0):
        self.address = address
        self._timeout = timeout
        self._interval = 1.0 / rate if rate else 0.0
        self._payload = "x" * payload
        self.acknowledged = []
        self.failures = 0
        self._next = first_id
        self._pause = pause
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        self._thread.join(30)

    def first_after(self, moment):
        """
        The first acknowledgement after ``moment`` (monotonic), or None.
        """
        return next((a for a in self.acknowledged if a.at > moment), None)

    def achieved(self):
        """
        Writes acknowledged a second over the writer's life.
        """
        if len(self.acknowledged) < 2:
            return 0.0
        span = self.acknowledged[-1].at - self.acknowledged[0].at
        return (len(self.acknowledged) - 1) / span if span > 0 else 0.0

    def _run(self):
        # Late: pymongo comes with the demo extra (setup.py).
        import pymongo
        import pymongo.errors
        from pymongo.write_concern import WriteConcern
        due = time.monotonic()
        while not self._stopping.is_set():
            try:
                with _client(self.address, timeout=self._timeout) as client:
                    collection = client[DATABASE].get_collection(
                        COLLECTION, write_concern=WriteConcern(w=1, j=True))
                    while not self._stopping.is_set():
                        document_id = self._next
                        self._next += 1
                        document = {"_id": document_id,
                                    "writer": self.address}
                        if self._payload:
                            document["payload"] = self._payload
                        collection.insert_one(document)
                        self.acknowledged.append(Acknowledged(
                            document_id, self.address, time.monotonic()))
                        if self._interval:
                            due = max(due + self._interval,
                                      time.monotonic() - self._interval)
                            self._stopping.wait(
                                max(0.0, due - time.monotonic()))
            except pymongo.errors.PyMongoError:
                self.failures += 1
                self._stopping.wait(self._pause)
                due = time.monotonic()


def read_writes(address):
    """
    Every document the writers wrote, as the server at ``address`` has
    them.
    """
    with _client(address) as client:
        return list(client[DATABASE][COLLECTION].find())


def lost(acknowledged, documents):
    """
    The acknowledged writes (``Acknowledged``) whose document is not among
    ``documents`` (as ``read_writes`` returns them).
    """
    present = {document["_id"] for document in documents}
    return [a for a in acknowledged if a.document_id not in present]


def overlapping(first, second):
    """
    The acknowledgements of ``first`` (the old node's writer) made after
    ``second`` (the new node's) made its first: writes two nodes took at
    once. Empty when the old node stopped acknowledging before the new one
    started.
    """
    if not second:
        return []
    start = min(a.at for a in second)
    return [a for a in first if a.at >= start]
