"""
A JSON file of records the control service keeps beside its configuration
(``failures.json``, ``pushes.json``): read whole at the start, replaced
atomically and durably on every change, readable by root only, with a
format version. A file that cannot be read is never guessed around: the
caller says what losing it means.
"""

import json
import os

from blockmover.control.errors import StoreError
from blockmover.files import PRIVATE_FILE, private_directory, write_atomically


class RecordFile(object):
    """
    ``<state_dir>/<filename>``, holding ``what`` (for messages) in format
    ``version``. ``if_lost`` finishes the message of a file that cannot be
    read: what to do, and what removing it forgets.
    """

    def __init__(self, state_dir, filename, version, what, if_lost):
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, filename)
        self._version = version
        self._what = what
        self._if_lost = if_lost

    def load(self, parse):
        """
        ``parse(data)`` of the file's JSON object, or None when there is no
        file yet.

        :raise StoreError: it cannot be read, or ``parse`` fails on it.
        """
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError("cannot read %s: %s; check the state "
                             "directory's permissions"
                             % (self.path, e.strerror))
        try:
            data = json.loads(raw)
            if data.get("version") != self._version:
                raise ValueError("format version %r, not %d"
                                 % (data.get("version"), self._version))
            return parse(data)
        except Exception as e:
            raise StoreError("%s cannot be read (%s); %s"
                             % (self.path, e, self._if_lost))

    def save(self, data):
        """
        Replace the file with ``data`` (a JSON object, its version added),
        durably.

        :raise StoreError: it could not be saved; the old file stays.
        """
        try:
            private_directory(self.state_dir)
            write_atomically(self.path, json.dumps(
                dict(data, version=self._version), indent=1, sort_keys=True),
                mode=PRIVATE_FILE)
        except OSError as e:
            raise StoreError("cannot save the %s in %s: %s; check the disk "
                             "and the state directory"
                             % (self._what, self.path, e.strerror or e))
