"""
Where a volume may be mounted: never over the system's own directories or
blockmover's state, so a careless or hostile app.yml cannot hide /etc or an
agent's state under a volume. Pure rules on the path as written.
"""

import posixpath
import re

# Directories the system runs from: a mountpoint there, or below, hides
# what the node needs to run. /var/run and /var/lock are symlinks into /run
# on every current distribution. The libraries' directories (/lib, /lib32,
# /lib64, /libx32) are matched by name, not listed.
SYSTEM_DIRECTORIES = ("/etc", "/usr", "/boot", "/dev", "/proc", "/sys",
                      "/run", "/bin", "/sbin", "/var/run", "/var/lock")
_LIBRARIES = re.compile(r"lib(x?[0-9]+)?")

# blockmover's own state: the agent's (blockmover.config.DEFAULT_STATE_DIR),
# the control service's and the loopback backend's default directories.
STATE_DIRECTORIES = ("/var/lib/blockmover/agent",
                     "/var/lib/blockmover/control",
                     "/var/lib/blockmover/loopback")

# Directories whose every entry matters: mounting on one of them exactly
# hides the state below it, while a directory inside them (the demo's
# /var/lib/blockmover/demo-data/...) is fine.
_PARENTS = ("/", "/var", "/var/lib", "/var/lib/blockmover")


# Directories others share: blockmover never makes one of them its own
# (readable by root only), as it does its state directories.
_SHARED = _PARENTS + SYSTEM_DIRECTORIES + (
    "/tmp", "/var/tmp", "/home", "/root", "/srv", "/opt", "/mnt", "/media")


def shared(path):
    """
    Whether ``path`` (absolute) is one of the directories the system and
    its users share, exactly: ``/``, ``/tmp``, ``/etc``, ``/var/lib`` ...
    A state directory must be one of its own below them.
    """
    path = normalize(path)
    return path in _SHARED or bool(_LIBRARIES.fullmatch(path[1:]))


def normalize(path):
    """
    ``path`` (absolute) with ``.``, ``..`` and repeated slashes resolved as
    text, so ``/data/../etc`` and ``//etc/`` read ``/etc``. (POSIX keeps
    a leading ``//``; Linux does not tell it from ``/``.)
    """
    return "/" + posixpath.normpath(path).lstrip("/")


def is_within(path, directory):
    """
    Whether normalized ``path`` is ``directory`` or below it.
    """
    return directory == "/" or path == directory or path.startswith(
        directory.rstrip("/") + "/")


def refusal(path, protected=()):
    """
    Why a volume may not be mounted at ``path``, or None when it may.
    ``protected`` adds directories of this cluster's own state (such as
    its loopback backend's root), refused like blockmover's defaults.
    """
    path = normalize(path)
    if path in _PARENTS:
        return ("%s holds the system's or blockmover's state; a volume "
                "mounted there would hide it" % (path,))
    top = path.split("/")[1]
    if _LIBRARIES.fullmatch(top):
        return ("/%s is a system directory (the node's libraries); a volume "
                "mounted there would hide it" % (top,))
    for directory in SYSTEM_DIRECTORIES:
        if is_within(path, directory):
            return ("%s is a system directory; a volume mounted there would "
                    "hide what the node runs from" % (directory,))
    for directory in STATE_DIRECTORIES + tuple(normalize(p)
                                               for p in protected):
        if is_within(path, directory) or is_within(directory, path):
            return ("%s is blockmover's own state; a volume mounted there "
                    "would hide it" % (directory,))
    return None
