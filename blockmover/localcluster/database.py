"""
MongoDB-compatible data for the demo and the acceptance tests: the
application definition of a ``secantusd-py`` server keeping its data on a
volume, and documents written, read back and checked through pymongo.
"""

import hashlib
import json
import socket

from blockmover.localcluster.services import script
from blockmover.poll import Backoff, poll

PORT = 27017
DATABASE = "blockmover"
COLLECTION = "documents"


def application(mountpoint, size="1G", filesystem="ext4"):
    """
    ``app.yml``'s entry for a ``secantusd-py`` server on port 27017 with its
    WiredTiger files on a volume mounted at ``mountpoint``. The command
    names the installed script by its absolute path: agents run commands
    by name, and the script lives in blockmover's environment.
    """
    return {
        "command": [script("secantusd-py"), "--host", "0.0.0.0",
                    "--port", str(PORT), "--storage-path",
                    mountpoint + "/wt", "--standalone"],
        "ports": [{"internal": PORT, "external": PORT}],
        "environment": {},
        "volume": {"mountpoint": mountpoint, "maximum_size": size,
                   "filesystem": filesystem},
    }


def _client(address, timeout=5.0):
    # Late: pymongo comes with the demo extra (setup.py), so only the calls
    # that talk to the database need it.
    import pymongo
    return pymongo.MongoClient(
        address, PORT, serverSelectionTimeoutMS=int(timeout * 1000),
        connectTimeoutMS=int(timeout * 1000), directConnection=True)


def wait_for_server(address, deadline=120.0):
    """
    Wait until the server at ``address`` answers a ping.
    """
    import pymongo.errors  # Late: see _client.

    def answers():
        with _client(address, timeout=2.0) as client:
            try:
                client.admin.command("ping")
                return True
            except pymongo.errors.PyMongoError:
                return None
    return poll(answers, deadline, "MongoDB to answer on %s:%d"
                % (address, PORT), backoff=Backoff(initial=0.2, maximum=2.0))


def document(n):
    return {"_id": n, "name": "document %d" % (n,),
            "payload": hashlib.sha256(b"%d" % (n,)).hexdigest() * 4}


def write_documents(address, count, batch=1000):
    """
    Write documents ``0 .. count - 1`` to the server at ``address``, into
    a collection emptied first (a demo run again starts afresh).
    """
    with _client(address) as client:
        collection = client[DATABASE][COLLECTION]
        collection.drop()
        for start in range(0, count, batch):
            collection.insert_many(
                [document(n) for n in range(start, min(count, start + batch))])


def read_documents(address):
    """
    Every document in the server at ``address``, sorted by ``_id``.
    """
    with _client(address) as client:
        return list(client[DATABASE][COLLECTION].find().sort("_id", 1))


def checksum(documents):
    """
    A sha256 over ``documents`` sorted by ``_id``, each as canonical JSON.
    """
    digest = hashlib.sha256()
    for doc in sorted(documents, key=lambda d: d["_id"]):
        digest.update(json.dumps(doc, sort_keys=True).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def missing_or_wrong(documents, count):
    """
    The ids among ``0 .. count - 1`` whose document is missing or differs,
    plus any id that should not be there.
    """
    found = {doc["_id"]: doc for doc in documents}
    bad = [n for n in range(count) if found.get(n) != document(n)]
    return bad + sorted(set(found) - set(range(count)))


def refuses_connections(address, timeout=2.0):
    """
    Whether nothing listens on ``address``'s MongoDB port.
    """
    try:
        socket.create_connection((address, PORT), timeout).close()
    except ConnectionRefusedError:
        return True
    return False
