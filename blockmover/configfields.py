"""
Readers for the kinds of values configuration files hold: each takes the
``Source`` the value came from, its dotted key and the value, and returns
the checked value or raises the ``ConfigError`` that says how to fix it.
"""

import posixpath
import re
import shlex
from urllib.parse import urlsplit

from blockmover.units import BadSize, parse_size
from blockmover.yamlsource import describe, join

# Names end up in volume names, metadata, URLs and certificates: keep them
# plain.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
NAME_RULE = ("use up to 63 letters, digits, '_', '.' or '-', starting with "
             "a letter or digit")


def mapping(src, key, value, known, required=(), empty_ok=False):
    """
    ``value`` as a dict whose keys are all in ``known`` and include every
    one of ``required``. An empty value is an empty mapping if
    ``empty_ok``.
    """
    if value is None and empty_ok:
        return {}
    if not isinstance(value, dict):
        raise src.error(key, "must be a mapping of %s, not %s"
                        % (", ".join(known), describe(value)))
    for name in value:
        if name not in known:
            raise src.error(join(key, name), "unknown key %r; the known keys"
                            " are %s" % (name, ", ".join(known)))
    for name in required:
        if name not in value:
            raise src.error(key, "%r is missing; add it (the keys are %s)"
                            % (name, ", ".join(known)))
    return value


def version(src, data):
    """
    The top of a file: a mapping whose ``version`` is 1.
    """
    if not isinstance(data, dict):
        raise src.error(None, "must be a mapping starting with 'version: 1',"
                        " not %s" % (describe(data),))
    if "version" not in data:
        raise src.error(None, "'version' is missing; start the file with "
                        "'version: 1'", line=1)
    if data["version"] != 1 or isinstance(data["version"], bool):
        raise src.error("version", "version %r is not supported; write "
                        "'version: 1'" % (data["version"],))


def string(src, key, value, what="a string"):
    if not isinstance(value, str) or not value:
        raise src.error(key, "must be %s, not %s" % (what, describe(value)))
    return value


def is_plain_name(value):
    """
    Whether ``value`` is a usable name of a cluster, node, application or
    user: letters, digits, ``_.-``, and nothing after them (not even a
    newline, which a ``$`` would let through).
    """
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def name(src, key, value, what):
    """
    A name of a cluster, node or application: letters, digits, ``_.-``.
    """
    if not is_plain_name(value):
        raise src.error(key, "%s %r is not a usable name; %s"
                        % (what, value, NAME_RULE))
    return value


def url(src, key, value):
    """
    An https URL with a host (the control service's: it speaks only TLS).
    """
    string(src, key, value, "a URL such as https://10.0.0.1:4523")
    try:
        parts = urlsplit(value)
        parts.port
    except ValueError as e:
        raise src.error(key, "not a URL (%s); write one such as "
                        "https://10.0.0.1:4523" % (e,))
    if parts.scheme != "https" or not parts.hostname:
        # The URL is not quoted back: it may carry a password.
        raise src.error(key, "not an https URL with a host; the control "
                        "service speaks only mutual TLS: write one such as "
                        "https://10.0.0.1:4523")
    return value


def urls(src, key, value):
    """
    One https URL or a list of them (the control service's replicas', each
    as ``url`` reads it), as a tuple.
    """
    if isinstance(value, list):
        if not value:
            raise src.error(key, "an empty list names no control service; "
                            "write its URL, or its replicas' URLs such as "
                            "[https://10.0.0.1:4523, https://10.0.0.2:4523]")
        found = tuple(url(src, join(key, i), each)
                      for i, each in enumerate(value))
        for i, each in enumerate(found):
            if each in found[:i]:
                # The URL is not quoted back: it may carry a password.
                raise src.error(join(key, i), "names the same URL as item "
                                "%d; list each replica once"
                                % (found.index(each),))
        return found
    if not isinstance(value, str):
        raise src.error(key, "must be a URL such as https://10.0.0.1:4523, "
                        "or a list of the replicas' URLs, not %s"
                        % (describe(value),))
    return (url(src, key, value),)


def absolute_path(src, key, value, root_ok=False):
    string(src, key, value, "an absolute path")
    if (not value.startswith("/") or "\0" in value or "\n" in value
            or (not root_ok and not posixpath.normpath(value).strip("/"))):
        raise src.error(key, "%r is not an absolute path%s; write one such as"
                        " /data/db" % (value, "" if root_ok else " below /"))
    return value


def boolean(src, key, value):
    if not isinstance(value, bool):
        raise src.error(key, "must be true or false, not %s"
                        % (describe(value),))
    return value


def integer(src, key, value, low=1, high=None, example="10"):
    if (not isinstance(value, int) or isinstance(value, bool)
            or value < low or (high is not None and value > high)):
        bounds = ("from %d to %d" % (low, high) if high is not None
                  else "at least %d" % (low,))
        raise src.error(key, "%r must be a whole number %s, such as %s"
                        % (value, bounds, example))
    return value


def seconds(src, key, value, low, high, example):
    """
    A duration in seconds, whole or not, from ``low`` to ``high``.
    """
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not low <= value <= high):
        raise src.error(key, "%r must be a number of seconds from %g to %g,"
                        " such as %s" % (value, low, high, example))
    return float(value)


def size(src, key, value):
    """
    Bytes from a size as people write it (512M, 1G, 1.5T, bytes).
    """
    if isinstance(value, float) or not isinstance(value, (int, str)):
        raise src.error(key, "%r is not a size; write bytes or a number "
                        "with K, M, G or T, such as 512M or 1.5G" % (value,))
    try:
        return parse_size(value)
    except BadSize as e:
        raise src.error(key, str(e))


def option(src, key, value):
    """
    A backend option: any scalar, kept as a string.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)) and value != "":
        return str(value)
    raise src.error(key, "a backend option must be a word or number, not %s"
                    % (describe(value),))


def command(src, key, value):
    """
    A command as a list of strings, or one string split like a shell does.
    """
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as e:
            raise src.error(key, "cannot split this command (%s); check its "
                            "quotes or write it as a list" % (e,))
    if not isinstance(value, list):
        raise src.error(key, "must be a list of arguments or a string, not %s"
                        % (describe(value),))
    for i, arg in enumerate(value):
        if not isinstance(arg, str):
            raise src.error(join(key, i), "argument %r must be a string; "
                            "write it in quotes" % (arg,))
    return value
