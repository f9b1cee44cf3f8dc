"""
A live block of status lines on a terminal: redrawn in place on a TTY,
printed as appended lines (only those that changed) anywhere else, so logs
of a non-interactive deploy stay readable.
"""

import shutil

_UP = "\x1b[%dA"
_CLEAR_LINE = "\x1b[2K"


class LiveLines(object):
    """
    Shows the newest version of a list of lines on ``stream``.
    """

    def __init__(self, stream, tty=None):
        self._stream = stream
        self._tty = stream.isatty() if tty is None else tty
        self._shown = []

    def show(self, lines):
        lines = list(lines)
        if self._tty:
            # A wrapped line would break the count of lines to redraw.
            width = max(20, shutil.get_terminal_size().columns - 1)
            lines = [line[:width] for line in lines]
            out = []
            if self._shown:
                out.append(_UP % (len(self._shown),))
            for line in lines:
                out.append("\r" + _CLEAR_LINE + line + "\n")
            # Clear what is left of a longer previous block.
            for _ in range(len(self._shown) - len(lines)):
                out.append("\r" + _CLEAR_LINE + "\n")
            self._stream.write("".join(out))
            lines = lines + [""] * (len(self._shown) - len(lines))
        else:
            for line in lines:
                if line not in self._shown:
                    self._stream.write(line + "\n")
        self._stream.flush()
        self._shown = lines
