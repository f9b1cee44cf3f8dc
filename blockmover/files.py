"""
The one way blockmover replaces a file it keeps state in, and the one way
it does so from the reactor (``FileWriter``).
"""

import os
import stat
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


# Modes of what only root may read: state that holds secrets (application
# records, stored configurations) and the logs of applications, which may
# print theirs.
PRIVATE_DIRECTORY = 0o700
PRIVATE_FILE = 0o600


def restrict(path, mode):
    """
    Give ``path`` exactly ``mode`` if it has another one (left by an older
    release, or by hand). A path that does not exist, or is a symbolic
    link, is left alone. Blocks (briefly).
    """
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(status.st_mode):
        return
    if stat.S_IMODE(status.st_mode) != mode:
        os.chmod(path, mode)


def private_directory(path):
    """
    Make the directory ``path`` (and missing parents) if missing, readable
    by its owner only: 0700, also when it existed with a looser mode.
    """
    os.makedirs(path, mode=PRIVATE_DIRECTORY, exist_ok=True)
    restrict(path, PRIVATE_DIRECTORY)


def private_file(path):
    """
    Make the file ``path`` if missing, empty, readable by its owner only:
    0600, also when it existed with a looser mode. For a file another
    program then opens to append to (an application's log).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                 PRIVATE_FILE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != PRIVATE_FILE:
            os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)


def restrict_files(directory):
    """
    ``restrict`` every regular file directly in ``directory`` to 0600.
    """
    for entry in os.listdir(directory):
        path = os.path.join(directory, entry)
        if os.path.isfile(path) and not os.path.islink(path):
            restrict(path, PRIVATE_FILE)


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
