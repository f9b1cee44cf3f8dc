"""
Where eliot's structured logs go, and how one deploy's task travels across
HTTP so that a whole move reads as one tree.
"""

import sys

from eliot import FileDestination, add_destinations

# An HTTP request made inside an eliot action carries the action's task id in
# this header; the receiving service continues the task.
TASK_HEADER = "X-Blockmover-Task"


def start_logging(path):
    """
    Send eliot's messages to ``path`` (appending, one JSON message a line),
    or to stdout when ``path`` is ``-`` or None.
    """
    if path in (None, "-"):
        stream = sys.stdout
    else:
        stream = open(path, "a", buffering=1)
    add_destinations(FileDestination(file=stream))
    return stream
