"""
The one mountinfo reader, on text and on this process's own table.
"""

import os

from blockmover.mountinfo import parse_mountinfo, process_mounts


def test_fields_and_escapes():
    text = ("36 35 7:3 / /mnt/with\\040space rw,relatime shared:1 - ext4 "
            "/dev/loop3 rw\n"
            "37 35 0:5 / /proc rw - proc proc rw\n"
            "38 35 8:1 / /a\\134b rw shared:2 master:1 - xfs "
            "/dev/with\\011tab rw\n")
    first, second, third = parse_mountinfo(text)
    assert (first.mountpoint, first.source, first.fstype, first.dev) == (
        "/mnt/with space", "/dev/loop3", "ext4", (7, 3))
    assert (second.mountpoint, second.source, second.dev) == (
        "/proc", "proc", (0, 5))
    assert (third.mountpoint, third.source, third.fstype) == (
        "/a\\b", "/dev/with\ttab", "xfs")


def test_line_without_separator_is_skipped():
    text = ("truncated line 7:3 /\n"
            "37 35 0:5 / /proc rw - proc proc rw\n")
    assert [m.mountpoint for m in parse_mountinfo(text)] == ["/proc"]


def test_own_mount_namespace_has_root():
    mounts = process_mounts()
    assert "/" in [m.mountpoint for m in mounts]
    assert process_mounts(os.getpid()) == mounts
