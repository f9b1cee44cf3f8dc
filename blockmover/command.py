"""
The one way blockmover runs a command: synchronously, off the reactor (in a
thread-pool thread or a command-line tool), with its output captured and a
failure turned into an error a person can read.
"""

import subprocess

from eliot import log_message


class CommandFailed(Exception):
    """
    A command exited non-zero (or could not be started).
    """
    def __init__(self, argv, returncode, stdout, stderr):
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = (stderr or stdout or "").strip().splitlines()
        Exception.__init__(
            self, "%s failed (exit %s)%s" % (
                " ".join(self.argv), returncode,
                ": " + detail[-1] if detail else ""))


def run(argv, input=None, check=True, timeout=300, env=None):
    """
    Run ``argv`` (a list, never a shell string) and return its stdout as
    text.

    :param check: raise ``CommandFailed`` on a non-zero exit; with False,
        return a ``subprocess.CompletedProcess`` instead of stdout.
    :raise CommandFailed: the command failed, could not be found, or ran
        longer than ``timeout`` seconds.
    """
    try:
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True,
            timeout=timeout, env=env)
    except FileNotFoundError as e:
        raise CommandFailed(argv, None, "", "command not found: %s" % (e,))
    except subprocess.TimeoutExpired as e:
        raise CommandFailed(argv, None, e.stdout or "",
                            "timed out after %s seconds" % (timeout,))
    log_message(message_type="blockmover:command", argv=list(argv),
                 exit=result.returncode)
    if not check:
        return result
    if result.returncode != 0:
        raise CommandFailed(argv, result.returncode, result.stdout,
                            result.stderr)
    return result.stdout
