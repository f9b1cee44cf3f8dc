"""
The loop devices that stand for attached volumes. Blocking: call these in a
thread pool, never on the reactor. Every function is idempotent, and finds
a volume's devices by their backing file, so it is safe after a crash.
"""

from blockmover.command import run


def devices_of(path):
    """
    The loop devices (``/dev/loopN``) whose backing file is ``path``.
    """
    out = run(["losetup", "-j", path])
    return [line.split(":", 1)[0] for line in out.splitlines()
            if line.strip()]


def attach(path):
    """
    A loop device backed by ``path``: the existing one, else a new one.
    """
    existing = devices_of(path)
    if existing:
        return existing[0]
    return run(["losetup", "--find", "--show", path]).strip()


def detach(path):
    """
    Remove every loop device backed by ``path``.
    """
    for device in devices_of(path):
        run(["losetup", "-d", device])


def refresh_size(path):
    """
    Make the loop devices of ``path`` see its current size (after a grow).
    """
    for device in devices_of(path):
        run(["losetup", "-c", device])
