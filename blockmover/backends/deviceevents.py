"""
Events of named device links appearing in or leaving one directory (a
node's ``/dev/disk/by-id``), through Linux inotify, as a wake source for
``blockmover.poll.poll``: a wait for an attach or a detach on this node
looks again the moment the node's device comes or goes.

inotify is reached through libc with ctypes: no extension to build.
"""

import ctypes
import ctypes.util
import errno
import os
import select
import struct
import time

IN_ATTRIB = 0x00000004
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
# udev makes a link under a temporary name and renames it into place.
_LINK_EVENTS = (IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM
                | IN_ATTRIB | IN_DELETE_SELF)
_HEADER = struct.Struct("iIII")


class _Libc(object):
    def __init__(self):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6",
                           use_errno=True)
        self.init1 = libc.inotify_init1
        self.init1.argtypes = [ctypes.c_int]
        self.init1.restype = ctypes.c_int
        self.add_watch = libc.inotify_add_watch
        self.add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p,
                                   ctypes.c_uint32]
        self.add_watch.restype = ctypes.c_int


_libc = None


def _inotify():
    global _libc
    if _libc is None:
        _libc = _Libc()
    return _libc


def parse_events(data):
    """
    The (mask, name) of each ``struct inotify_event`` in ``data``.
    """
    events = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        _wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        name = data[offset:offset + length].split(b"\0", 1)[0]
        offset += length
        events.append((mask, os.fsdecode(name)))
    return events


class DeviceEvents(object):
    """
    Watches ``directory`` for links called one of ``names``. A context
    manager: the watch is in place from ``__enter__`` (before the caller's
    first look, so no event falls between a look and the watch) until
    ``__exit__``.

    :raise OSError: the directory cannot be watched (missing, or no
        inotify); callers then poll without events.
    """

    def __init__(self, directory, names, clock=time.monotonic):
        self.directory = directory
        self.names = frozenset(names)
        self._clock = clock
        self._fd = None

    def __enter__(self):
        libc = _inotify()
        fd = libc.init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            error = ctypes.get_errno()
            raise OSError(error, "inotify_init1: " + os.strerror(error))
        if libc.add_watch(fd, os.fsencode(self.directory),
                          _LINK_EVENTS | IN_ONLYDIR) < 0:
            error = ctypes.get_errno()
            os.close(fd)
            raise OSError(error, "cannot watch %s: %s"
                          % (self.directory, os.strerror(error)))
        self._fd = fd
        return self

    def __exit__(self, *exc_info):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _read(self):
        # Drains everything pending: a burst (udev's virtio, scsi and wwn
        # links) wakes the waiter once.
        relevant = False
        while True:
            try:
                data = os.read(self._fd, 65536)
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    return relevant
                raise
            for mask, name in parse_events(data):
                if name in self.names or mask & IN_DELETE_SELF:
                    relevant = True

    def wait(self, timeout, interrupt=None):
        """
        Pause until one of the links comes or goes (True) or ``timeout``
        seconds pass (False). Other names in the directory do not end it.
        A readable ``interrupt`` (a file descriptor) ends it too (False),
        so a thread can also wait for something else to happen.
        """
        end = self._clock() + timeout
        watched = [self._fd] + ([interrupt] if interrupt is not None else [])
        while True:
            remaining = end - self._clock()
            if remaining <= 0:
                return False
            readable, _, _ = select.select(watched, [], [], remaining)
            if interrupt is not None and interrupt in readable:
                return False
            if self._fd in readable and self._read():
                return True
