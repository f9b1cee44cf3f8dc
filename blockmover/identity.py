"""
Where a volume's identity comes from: the cluster and the application,
never a node, so any node and a restarted control service find a dataset
from the backend's listing alone.
"""

import uuid

# Fixed namespace for blockmover dataset ids; changing it would orphan every
# existing volume.
_NAMESPACE = uuid.UUID("6f1c1a8e-3a51-4c1e-9b7f-0d6c5e2b9a41")

CLUSTER_KEY = "blockmover-cluster"
DATASET_KEY = "blockmover-dataset"
APPLICATION_KEY = "blockmover-application"
NAME_KEY = "blockmover-name"
# "new" on a volume no filesystem was made on yet; see agents.plan.
FORMAT_KEY = "blockmover-format"
NEW = "new"
FORMATTED = "formatted"
# A volume pushed into from another site is marked incoming (with the
# push's id) until both sides' digests matched: never data before. Its
# generation, one more than the volume pushed from, makes it the
# dataset's volume once the mark says complete.
PUSH_KEY = "blockmover-push"
PUSH_ID_KEY = "blockmover-push-id"
INCOMING = "incoming"
COMPLETE = "complete"
GENERATION_KEY = "blockmover-generation"
# The push a volume was made blank for: its first round need not read it.
BLANK_FOR_KEY = "blockmover-blank-for"


def is_incoming(volume):
    """
    Whether ``volume`` (a ``model.Volume``) is being pushed into: it holds
    no data anyone may use yet.
    """
    return volume.metadata.get(PUSH_KEY) == INCOMING


def generation(volume):
    """
    The generation of ``volume``'s data: 0 for a volume never pushed into,
    one more with every push. Of a dataset's volumes not incoming, the one
    of the highest generation is the dataset's; the others are kept copies.
    """
    try:
        return int(volume.metadata.get(GENERATION_KEY, "0"))
    except ValueError:
        return 0


def dataset_id(cluster_name, application_name):
    """
    The dataset id of ``application_name``'s volume in ``cluster_name``: a
    UUID, the same on every machine and every run.
    """
    return str(uuid.uuid5(_NAMESPACE, "%s/%s" % (cluster_name,
                                                  application_name)))


def stamped(filesystem_uuid, dataset):
    """
    Whether a filesystem whose UUID is ``filesystem_uuid`` (None: no
    filesystem) carries the stamp of ``dataset``: the one check made before
    a device is mounted, grown or taken as the dataset's. Tools print UUIDs
    in either case.
    """
    return (filesystem_uuid is not None
            and filesystem_uuid.lower() == dataset.lower())


def volume_name(cluster_name, application_name):
    """
    The readable name a volume carries in the backend.
    """
    return "blockmover-%s-%s" % (cluster_name, application_name)


def volume_metadata(cluster_name, application_name):
    """
    The metadata stamped on a new volume.
    """
    return {
        CLUSTER_KEY: cluster_name,
        DATASET_KEY: dataset_id(cluster_name, application_name),
        APPLICATION_KEY: application_name,
        NAME_KEY: volume_name(cluster_name, application_name),
        FORMAT_KEY: NEW,
    }


def filesystem_label(dataset):
    """
    The label of a dataset's filesystem (at most 12 characters, so that xfs
    takes it too). The filesystem's UUID is the dataset id itself; the label
    only helps a human reading ``blkid``.
    """
    return "bm-" + dataset.replace("-", "")[:9]
