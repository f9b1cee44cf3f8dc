"""
Sizes as people write them: 512M, 1G, 1.5T, or plain bytes.
"""

import math
import re

_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.I)

MiB = 1024 ** 2
GiB = 1024 ** 3


class BadSize(ValueError):
    pass


def parse_size(text):
    """
    Bytes from ``512M``, ``1G``, ``1.5T``, ``1GiB``, ``1048576``; BadSize
    otherwise.
    """
    if isinstance(text, bool):
        raise BadSize("%r is not a size" % (text,))
    if isinstance(text, int):
        if text <= 0:
            raise BadSize("a size must be positive, not %d" % (text,))
        return text
    match = _SIZE.match(str(text))
    if match is None:
        raise BadSize("%r is not a size: write bytes or a number with K, M, "
                      "G or T, such as 512M or 1.5G" % (text,))
    number, unit = match.groups()
    size = int(math.ceil(float(number) * _UNITS[unit.upper()]))
    if size <= 0:
        raise BadSize("a size must be positive, not %r" % (text,))
    return size


def format_size(size):
    """
    The shortest exact way to write ``size`` bytes: 1G, 512M, 1536K, 1000.
    """
    for unit in "TGMK":
        if size % _UNITS[unit] == 0:
            return "%d%s" % (size // _UNITS[unit], unit)
    return str(size)


def round_up(size, unit):
    return -(-size // unit) * unit
