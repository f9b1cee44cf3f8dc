"""
Keeping secrets out of what the control service shows: a configuration
handed back over HTTP has every secret-looking value replaced.
"""

import re

REDACTED = "<redacted>"

_SECRET_NAME = (r"""["']?[\w.-]*(?:password|passwd|secret|token|credential|"""
                r"""api_?key|private_?key)[\w.-]*["']?""")

# A secret-looking key and its inline value: quoted, or plain up to the end
# of the line, a comma or a closing brace (flow style).
_INLINE = re.compile(
    r"(?P<key>" + _SECRET_NAME + r"[ \t]*:)(?P<space>[ \t]*)"
    r"""(?P<value>"(?:[^"\\\n]|\\.)*"|'(?:[^'\n]|'')*'|[^\s,}#][^\n,}#]*"""
    r"""(?<=[^\s]))""",
    re.IGNORECASE)

# A secret-looking key opening a block: everything indented under it is
# secret.
_BLOCK = re.compile(r"^(?P<indent>[ \t]*)(?:-[ \t]+)?" + _SECRET_NAME +
                    r"[ \t]*:[ \t]*(?:[|>][-+0-9]*)?[ \t]*(?:#.*)?$",
                    re.IGNORECASE)

# The value part of a line inside such a block.
_BLOCK_LINE = re.compile(r"^(?P<lead>[ \t]*(?:-[ \t]+)?(?:[^:#\n]+:)?[ \t]*)"
                         r"(?P<value>\S.*)$")


def scrub_yaml(text):
    """
    ``text`` (YAML) with the value of every key that looks like a password,
    secret or token replaced by ``'<redacted>'``, and every line of a block
    nested under such a key too; everything else unchanged.
    """
    lines = text.split("\n")
    out = []
    block_indent = None
    for line in lines:
        indent = len(line) - len(line.lstrip(" \t"))
        if block_indent is not None:
            if line.strip() == "" or indent > block_indent:
                out.append(_redact_block_line(line))
                continue
            block_indent = None
        match = _BLOCK.match(line)
        if match:
            block_indent = len(match.group("indent"))
            out.append(line)
            continue
        out.append(_INLINE.sub(
            lambda m: "%s%s'%s'" % (m.group("key"), m.group("space") or " ",
                                    REDACTED), line))
    return "\n".join(out)


def _redact_block_line(line):
    match = _BLOCK_LINE.match(line)
    if match is None or match.group("value").startswith("#"):
        return line
    return "%s'%s'" % (match.group("lead"), REDACTED)
