"""
The one way blockmover replaces a file it keeps state in, and the one way
it does so from the reactor (``FileWriter``).
"""

import os
import tempfile

from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool


def write_atomically(path, text, mode=0o644):
    """
    Replace ``path`` with ``text`` so that a reader, or a restart after a
    crash, sees the old content or the new, never a mix: write a temporary
    file in the same directory (created with ``mode`` from the start, so a
    secret is never readable by others even for a moment), fsync it, rename
    it over ``path``, fsync the directory. Blocks: call it off the reactor.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(
        dir=directory, prefix="." + os.path.basename(path) + ".",
        suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.rename(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


class FileWriter(object):
    """
    The one way state files are written from the reactor: in the order
    asked, one at a time, in a thread of their own, so a later save never
    lands before an earlier one and the reactor never waits for an fsync.
    ``start`` before the first write; ``stop`` finishes the writes asked
    for, then ends the thread.
    """

    def __init__(self, reactor, name):
        self._reactor = reactor
        self._thread = ThreadPool(minthreads=0, maxthreads=1, name=name)

    def start(self):
        self._thread.start()

    def stop(self):
        self._thread.stop()

    def run(self, write, *args, **kwargs):
        """
        Call ``write(*args, **kwargs)`` in the writer's thread, after every
        write asked for before.

        :return: a Deferred firing, on the reactor, with its result.
        """
        return deferToThreadPool(self._reactor, self._thread, write, *args,
                                 **kwargs)

    def write_atomically(self, path, text, mode=0o644):
        """
        ``write_atomically(path, text, mode)`` in the writer's thread; a
        Deferred firing once the file is on disk.
        """
        return self.run(write_atomically, path, text, mode)
