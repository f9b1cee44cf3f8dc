"""
Reading mount tables (``/proc/<pid>/mountinfo``) and clearing the mounts a
node made inside its own mount namespace.
"""

import os

from pyrsistent import PClass, field

from blockmover.command import run


class MountEntry(PClass):
    mountpoint = field(type=str, mandatory=True)
    source = field(type=str, mandatory=True)
    fstype = field(type=str, mandatory=True)


def _unescape(text):
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"),
                       ("\\134", "\\")):
        text = text.replace(code, char)
    return text


def parse_mountinfo(text):
    """
    The mounts of a ``mountinfo`` text, in the kernel's order (parents
    before children).
    """
    entries = []
    for line in text.splitlines():
        fields = line.split(" ")
        if "-" not in fields:
            continue
        dash = fields.index("-")
        entries.append(MountEntry(
            mountpoint=_unescape(fields[4]),
            fstype=fields[dash + 1],
            source=_unescape(fields[dash + 2]),
        ))
    return entries


def mounts_of(pid="self"):
    """
    The mounts in the mount namespace of process ``pid``.

    :raise OSError: the process is gone.
    """
    with open("/proc/%s/mountinfo" % (pid,)) as f:
        return parse_mountinfo(f.read())


def is_mountpoint(path, pid="self"):
    path = os.path.realpath(path)
    return any(m.mountpoint == path for m in mounts_of(pid))


def namespace_mounts(mount_ns):
    """
    The mounts inside the persistent mount namespace bound at ``mount_ns``.
    """
    return parse_mountinfo(run(["nsenter", "--mount=" + mount_ns, "--",
                                "cat", "/proc/self/mountinfo"]))


def node_made_mounts(mount_ns, loop_devices):
    """
    The mounts in the namespace at ``mount_ns`` that the host does not
    have, or whose source is one of ``loop_devices``: what the node mounted
    itself, deepest first so they can be unmounted in order.
    """
    host = set((m.mountpoint, m.source) for m in mounts_of())
    devices = set(loop_devices)
    made = [m for m in namespace_mounts(mount_ns)
            if m.source in devices or (m.mountpoint, m.source) not in host]
    return list(reversed(made))


def unmount_in_namespace(mount_ns, mountpoint):
    """
    Unmount ``mountpoint`` inside the namespace at ``mount_ns``; a
    mountpoint already gone is fine.
    """
    result = run(["nsenter", "--mount=" + mount_ns, "--",
                  "umount", mountpoint], check=False)
    if result.returncode != 0 and "not mounted" not in result.stderr:
        # A lazy unmount still frees the device once nothing uses it.
        run(["nsenter", "--mount=" + mount_ns, "--",
             "umount", "--lazy", mountpoint])
