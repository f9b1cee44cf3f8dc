"""
Processes as the kernel names them: a pid together with its start time, so
that a recorded process is never confused with a later one given the same
pid.
"""


def process_start(pid):
    """
    The start time of process ``pid`` in clock ticks since boot (field 22
    of ``/proc/<pid>/stat``) and its state letter ("Z" for a zombie), or
    None when no such process exists.
    """
    try:
        with open("/proc/%d/stat" % (pid,)) as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split
    # after the last ")".
    rest = stat[stat.rindex(")") + 2:].split()
    return int(rest[19]), rest[0]
