"""
Where the control service keeps the cluster's configuration between runs:
one JSON file in the state directory, replaced atomically, so a crash at any
point leaves either the old configuration or the new one, never a mix.
"""

import json
import os

from pyrsistent import PClass, field

from blockmover import mountpoints
from blockmover.control.errors import StoreError
from blockmover.files import (
    PRIVATE_DIRECTORY, PRIVATE_FILE, private_directory, restrict,
    write_atomically,
)

FORMAT_VERSION = 1
FILENAME = "configuration.json"


class StoredConfiguration(PClass):
    """
    The configuration as the operator sent it: the two YAML texts and the
    names to use for them in error messages. ``generation`` is the
    configuration's generation; ``counter`` is the highest generation handed
    out to any node's slice, kept so generations never go backwards across a
    restart. The parsed ``Deployment`` is recomputed from the texts at load,
    so the file never depends on the record layout of one release.
    """
    generation = field(type=int, mandatory=True)
    counter = field(type=int, mandatory=True)
    cluster_yml = field(type=str, mandatory=True)
    app_yml = field(type=str, mandatory=True)
    cluster_path = field(type=str, mandatory=True, initial="cluster.yml")
    app_path = field(type=str, mandatory=True, initial="app.yml")


class FileStore(object):
    """
    A ``StoredConfiguration`` in ``<state_dir>/configuration.json``.
    Blocking file I/O, small and local: fine on the reactor thread.

    The configuration holds every application's secrets: the directory is
    0700 and the file 0600, made so when they are loaded or saved, also
    where an older release left them looser.
    """
    # The record it keeps, in metrics.
    name = "configuration"


    def __init__(self, state_dir):
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, FILENAME)

    def load(self):
        """
        :return: the stored configuration, or None when none was stored yet.
        :raise StoreError: the file is unreadable, malformed or of an
            unknown format version, or cannot be made readable by root only.
        """
        self._check_own_directory()
        try:
            restrict(self.state_dir, PRIVATE_DIRECTORY)
            restrict(self.path, PRIVATE_FILE)
        except OSError as e:
            raise StoreError("cannot make %s readable by its owner only: %s;"
                             " check the state directory's permissions"
                             % (self.path, e.strerror or e))
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError("cannot read %s: %s; check the state directory's "
                             "permissions" % (self.path, e.strerror))
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise StoreError("%s is not valid JSON (%s); restore it from a "
                             "backup or remove it and deploy again"
                             % (self.path, e))
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            version = data.get("version") if isinstance(data, dict) else None
            raise StoreError(
                "%s has format version %r but this blockmover-control reads "
                "version %d only; run the release that wrote it, or remove "
                "the file and deploy again" % (self.path, version,
                                               FORMAT_VERSION))
        try:
            return StoredConfiguration(
                generation=data["generation"],
                counter=data.get("counter", data["generation"]),
                cluster_yml=data["cluster_yml"],
                app_yml=data["app_yml"],
                cluster_path=data.get("cluster_path", "cluster.yml"),
                app_path=data.get("app_path", "app.yml"))
        except (KeyError, TypeError) as e:
            raise StoreError("%s is missing or has a bad field (%s); restore "
                             "it from a backup or remove it and deploy again"
                             % (self.path, e))

    def _check_own_directory(self):
        if mountpoints.shared(self.state_dir):
            raise StoreError(
                "%s is a directory the system shares, and the control "
                "service makes its state directory readable by root only; "
                "give it one of its own with --state-dir, such as "
                "/var/lib/blockmover/control" % (self.state_dir,))

    def save(self, stored):
        """
        Replace the stored configuration with ``stored``, durably: write a
        temporary file in the same directory, fsync it, rename it over the
        old one, fsync the directory. Readable by the owner only, since an
        app.yml holds its applications' secrets and a cluster.yml may hold
        backend options that are secrets.

        :raise StoreError: it could not be saved; the old one stays.
        """
        data = dict(version=FORMAT_VERSION, generation=stored.generation,
                    counter=stored.counter, cluster_yml=stored.cluster_yml,
                    app_yml=stored.app_yml, cluster_path=stored.cluster_path,
                    app_path=stored.app_path)
        self._check_own_directory()
        try:
            private_directory(self.state_dir)
            write_atomically(self.path, json.dumps(data, indent=1,
                                                   sort_keys=True),
                             mode=PRIVATE_FILE)
        except OSError as e:
            raise StoreError("cannot save the configuration in %s: %s; check "
                             "the disk and the state directory, then deploy "
                             "again" % (self.path, e.strerror or e))
