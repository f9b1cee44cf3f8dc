"""
The one way blockmover replaces a file it keeps state in.
"""

import os
import tempfile


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
