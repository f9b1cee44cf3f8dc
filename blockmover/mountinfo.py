"""
The one reader of mount tables (``/proc/<pid>/mountinfo``): what is
mounted where in the mount namespace of a process.
"""

from pyrsistent import PClass, field


class MountEntry(PClass):
    """
    One line of mountinfo: ``dev`` is the ``(major, minor)`` of the
    mounted filesystem's device.
    """
    mountpoint = field(type=str, mandatory=True)
    source = field(type=str, mandatory=True)
    fstype = field(type=str, mandatory=True)
    dev = field(type=tuple, mandatory=True)


def _unescape(text):
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    for escaped, plain in (("\\040", " "), ("\\011", "\t"),
                           ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(escaped, plain)
    return text


def parse_mountinfo(text):
    """
    The ``MountEntry`` list of a mountinfo file's ``text``, in mount order
    (parents before children).
    """
    entries = []
    for line in text.splitlines():
        fields = line.split(" ")
        # Six fixed fields, optional ones, "-", then type, source, options.
        if "-" not in fields[6:]:
            continue
        separator = fields.index("-", 6)
        major, minor = fields[2].split(":")
        entries.append(MountEntry(
            mountpoint=_unescape(fields[4]),
            source=_unescape(fields[separator + 2]),
            fstype=fields[separator + 1],
            dev=(int(major), int(minor))))
    return entries


def process_mounts(pid="self"):
    """
    Every mount of the mount namespace process ``pid`` is in, in mount
    order.

    :raise OSError: the process is gone.
    """
    with open("/proc/%s/mountinfo" % (pid,)) as f:
        return parse_mountinfo(f.read())
