"""
Keeping secrets out of what the control service shows: a configuration
handed back over HTTP has every secret-looking value replaced.
"""

import re

REDACTED = "<redacted>"

# A YAML key that looks like it holds a secret, then its value: quoted, or
# plain up to the end of the line, a comma or a closing brace (flow style).
_SECRET = re.compile(
    r"""(?P<key>["']?[\w.-]*(?:password|passwd|secret|token|credential|"""
    r"""api_?key|private_?key)[\w.-]*["']?[ \t]*:)(?P<space>[ \t]*)"""
    r"""(?P<value>"(?:[^"\\\n]|\\.)*"|'(?:[^'\n]|'')*'|[^\n,}#]*[^\s,}#])?""",
    re.IGNORECASE)


def scrub_yaml(text):
    """
    ``text`` (YAML) with the value of every key that looks like a password,
    secret or token replaced by ``<redacted>``; everything else unchanged.
    """
    def redact(match):
        if match.group("value") is None:
            # A block (nested mapping) follows: leave its keys to their own
            # match; a bare key with nothing after it hides nothing.
            return match.group(0)
        return "%s%s'%s'" % (match.group("key"), match.group("space") or " ",
                             REDACTED)
    return _SECRET.sub(redact, text)
