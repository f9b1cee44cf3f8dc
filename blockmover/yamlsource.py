"""
YAML text as plain values that remember where they came from, so that every
configuration error can name its file, line and key.

PyYAML's loader forgets lines and silently keeps the last of two equal keys;
here the text is composed into nodes (which carry marks) and built into
plain dicts, lists and scalars by hand, refusing duplicate keys and
non-string keys on the way. Anchors and aliases are refused while the text
is composed: a few hundred bytes of nested aliases expand to gigabytes
("billion laughs"), and a configuration gains nothing from them that
writing the value out does not give.
"""

import re

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent


class ConfigError(Exception):
    """
    A configuration file says something blockmover cannot use.

    ``file`` is the file's name, ``line`` the 1-based line (or None),
    ``key`` the dotted path of the offending entry (or None), ``message``
    what is wrong and what would be right. ``str()`` is one line:
    ``cluster.yml:12: deployment.node3: unknown node 'node3'; ...``.
    """

    def __init__(self, file, line, key, message):
        Exception.__init__(self, file, line, key, message)
        self.file = file
        self.line = line
        self.key = key
        self.message = message

    def __str__(self):
        where = self.file if self.line is None else "%s:%d" % (self.file,
                                                                self.line)
        parts = [where] + ([self.key] if self.key else []) + [self.message]
        # One line whatever the message quotes.
        return ": ".join(parts).replace("\n", " ")


# Words in a key that say its value is secret (a password, an API key, an
# application's secrets ...): such a value is never quoted in an error,
# nor shown back by the control service.
_SECRET_WORD = re.compile(r"password|passwd|secret|token|credential|"
                          r"api_?key|private_?key", re.IGNORECASE)


def looks_secret(path):
    """
    Whether a key of ``path`` (a tuple of keys and list indexes, or a
    dotted key) says that the value under it is secret.
    """
    if isinstance(path, str):
        path = (path,)
    return any(isinstance(key, str) and _SECRET_WORD.search(key)
               for key in path)


class _AnchorFound(Exception):
    """
    The text uses an anchor or an alias; ``event`` is the first, ``path``
    the keys and list indexes that lead to it.
    """
    def __init__(self, event, path):
        Exception.__init__(self, event)
        self.event = event
        self.path = path


class _Loader(yaml.SafeLoader):
    """
    PyYAML's safe loader, stopping at the first anchor (``&name``) or alias
    (``*name``) before anything is built from it.
    """

    def __init__(self, stream):
        yaml.SafeLoader.__init__(self, stream)
        self._path = []

    def compose_node(self, parent, index):
        # ``index`` is the key node of a mapping's value, the position of a
        # list's item, None for a key or the top.
        step = index.value if isinstance(index, yaml.ScalarNode) else index
        event = self.peek_event()
        if isinstance(event, AliasEvent) or event.anchor is not None:
            raise _AnchorFound(event, tuple(self._path) + (step,))
        self._path.append(step)
        try:
            return yaml.SafeLoader.compose_node(self, parent, index)
        finally:
            self._path.pop()


# libyaml's composer, where PyYAML was built with it: the same nodes and
# marks, a few times faster (a 10,000-node configuration is over a megabyte).
_FAST_LOADER = getattr(yaml, "CSafeLoader", None)


def _compose(text, fast_loader=_FAST_LOADER):
    """
    The node tree of ``text``. libyaml's composer cannot stop at an anchor
    and words its errors its own way, so it composes only a text that
    holds no ``&`` and no ``*`` (it has neither anchor nor alias then),
    and any text it refuses is composed again by ``_Loader``, whose
    refusal is the one reported. It refuses nesting deeper than 1,000
    levels rather than recursing without bound.
    """
    if fast_loader is None or "&" in text or "*" in text:
        return yaml.compose(text, Loader=_Loader)
    try:
        return yaml.compose(text, Loader=fast_loader)
    except yaml.YAMLError:
        return yaml.compose(text, Loader=_Loader)


def join(key, name):
    """
    The dotted path of ``name`` (a mapping key or a list index) under
    ``key``.
    """
    if isinstance(name, int):
        return "%s[%d]" % (key or "", name)
    return name if not key else "%s.%s" % (key, name)


def describe(value):
    """
    What kind of YAML value ``value`` is, for error messages.
    """
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a %s" % (type(value).__name__,)


# What a Source's nodes are once it let go of them.
_LET_GO = object()


class Source(object):
    """
    One parsed YAML file: ``data`` (plain dicts, lists and scalars; None for
    an empty file) and the line of every dotted key in it.
    """

    def __init__(self, text, path):
        self.path = path
        self._lines = {}
        self._constructor = SafeConstructor()
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ConfigError(path, None, None,
                                  "not UTF-8 text (%s); save it as UTF-8"
                                  % (e.reason,))
        try:
            root = _compose(text)
        except _AnchorFound as e:
            alias = isinstance(e.event, AliasEvent)
            # Under a secret, "&..." or "*..." is likely a secret value that
            # starts so, unquoted: not repeated.
            hidden = looks_secret(e.path)
            raise ConfigError(
                path, e.event.start_mark.line + 1, None,
                "%s %s%s is not supported: anchors and aliases are refused "
                "(they can make a small file expand without bound); write "
                "the value out in full%s" % (
                    "alias" if alias else "anchor", "*" if alias else "&",
                    "..." if hidden else e.event.anchor,
                    ", or in quotes if it is a value starting with %s"
                    % ("*" if alias else "&",) if hidden else ""))
        except RecursionError:
            raise ConfigError(path, None, None, "nested too deeply to read; "
                              "write it with fewer levels of lists and "
                              "mappings")
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            raise ConfigError(path, mark.line + 1 if mark else None, None,
                              "not valid YAML: %s" % (e.problem or e.context,))
        except yaml.reader.ReaderError as e:
            raise ConfigError(path, text[:e.position].count("\n") + 1, None,
                              "character %r is not allowed in YAML; remove "
                              "it" % (chr(e.character),))
        except yaml.YAMLError as e:
            raise ConfigError(path, None, None, "not valid YAML: %s" % (e,))
        self.text = text
        self._root = root
        try:
            self.data = None if root is None else self._build(root, "")
        except RecursionError:
            raise ConfigError(path, None, None, "nested too deeply to read; "
                              "write it with fewer levels of lists and "
                              "mappings")

    def let_go_of_nodes(self):
        """
        Drop the composed nodes, which only ``redacted`` needs, to keep
        this source for long: on a large configuration they are most of
        its memory.
        """
        self._root = _LET_GO

    def line(self, key):
        """
        The line of ``key``, or of the nearest enclosing key that has one.
        """
        while key:
            if key in self._lines:
                return self._lines[key]
            if key.endswith("]"):
                key = key[:key.rindex("[")]
            elif "." in key:
                key = key[:key.rindex(".")]
            else:
                key = ""
        return self._lines.get("")

    def error(self, key, message, line=None):
        """
        A ConfigError about ``key`` in this file, at its line unless
        ``line`` says otherwise.
        """
        return ConfigError(self.path,
                           line if line is not None else self.line(key),
                           key or None, message)

    def redacted(self, is_secret, marker):
        """
        The text with the value of every mapping key whose path
        ``is_secret`` accepts written out anew with ``marker`` in place of
        every scalar in it: a scalar becomes ``'marker'``, a mapping or list
        the same in flow style (``{NAME: marker}``), keeping its keys.
        Comments inside such a value and one right after it on its line go
        with it, since a comment may hold an old value. All else is kept as
        written, and the text still reads as YAML of the same shape.

        :param is_secret: called with the path of each mapping value (a
            tuple of the keys and list indexes from the top, such as
            ``("applications", "web", "secrets")``) outside a value already
            redacted.
        """
        regions = []
        if self._root is _LET_GO:
            raise ValueError("the nodes of %s were let go; read it again to "
                             "redact it" % (self.path,))
        if self._root is not None:
            self._find_secrets(self._root, (), is_secret, marker, regions)
        text = self.text
        for start, end, replacement in sorted(regions, reverse=True):
            text = text[:start] + replacement + text[end:]
        return text

    def _find_secrets(self, node, path, is_secret, marker, regions):
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._find_secrets(item, path + (i,), is_secret, marker,
                                   regions)
        elif isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                inner = path + (key_node.value,)
                if is_secret(inner):
                    region = self._value_region(key_node, value_node, marker)
                    if region is not None:
                        regions.append(region)
                else:
                    self._find_secrets(value_node, inner, is_secret, marker,
                                       regions)

    def _value_region(self, key_node, value_node, marker):
        """
        ``(start, end, replacement)`` redacting one mapping value: from the
        end of its key to the end of the value (and of a comment after it
        on its line), keeping the ``:`` and the line breaks that end it;
        None for a key written without a value (``{key}``), which holds
        nothing.
        """
        text = self.text
        start = key_node.end_mark.index
        end = value_node.end_mark.index
        comment = _COMMENT_AFTER.match(text, end)
        if comment is not None:
            end = comment.end()
        between = text[start:value_node.start_mark.index]
        colon = _indicator(between)
        if colon is None:
            return None
        tail = _LINE_ENDS.search(text, start, end)
        return (start, end, between[:colon + 1] + " "
                + _masked_text(value_node, marker)
                + (tail.group() if tail is not None else ""))

    def _build(self, node, key):
        line = node.start_mark.line + 1
        self._lines.setdefault(key, line)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, key, line)
        if isinstance(node, yaml.SequenceNode):
            return [self._build(item, join(key, i))
                    for i, item in enumerate(node.value)]
        return self._mapping(node, key)

    def _mapping(self, node, key):
        result = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.error(key, "a key must be a plain name, not %s"
                                 % (describe_node(key_node),), line)
            name = self._scalar(key_node, key, line)
            if not isinstance(name, str) or not name:
                raise self.error(key, "key %r must be a name; write it in "
                                 "quotes" % (name,), line)
            path = join(key, name)
            if name in result:
                raise self.error(path, "%r appears twice (first on line %d);"
                                 " keep one" % (name, self._lines[path]),
                                 line)
            # A nested mapping or list starts below its key: point at the key.
            self._lines[path] = line
            result[name] = self._build(value_node, path)
        return result

    def _scalar(self, node, key, line):
        if node.tag == "tag:yaml.org,2002:merge":
            raise self.error(key, "merge keys (<<) are not supported; write "
                             "the keys out", line)
        try:
            return self._constructor.construct_object(node, deep=True)
        except Exception:
            # PyYAML's constructors fail on a malformed value with whatever
            # their parsing meets (ValueError for !!int, KeyError for
            # !!bool, AttributeError for !!timestamp), and their messages
            # quote the value, which may be a secret: name the type only.
            raise self.error(key, "cannot read this value as %s; write it in"
                             " quotes" % (_short_tag(node.tag, key),), line)


# A comment right after a value, on its line.
_COMMENT_AFTER = re.compile(r"[ \t]+#[^\r\n]*")
# The line breaks (and the next line's indentation) that end a block value.
_LINE_ENDS = re.compile(r"[\r\n][ \t\r\n]*\Z")


def _indicator(between):
    """
    Where the ``:`` is in ``between``, the text from a key to its value:
    only whitespace, comments and that indicator (None without it).
    """
    i = 0
    while i < len(between):
        if between[i] == "#":
            newline = between.find("\n", i)
            i = len(between) if newline < 0 else newline
        elif between[i] == ":":
            return i
        else:
            i += 1
    return None


class _Marker(str):
    """
    A redacted value: always written in single quotes.
    """


class _MarkerDumper(yaml.SafeDumper):
    pass


_MarkerDumper.add_representer(
    _Marker, lambda dumper, marker: dumper.represent_scalar(
        "tag:yaml.org,2002:str", marker, style="'"))


def _masked(node, marker):
    """
    ``node`` as plain data with ``marker`` for every scalar, keys kept.
    """
    if isinstance(node, yaml.SequenceNode):
        return [_masked(item, marker) for item in node.value]
    if isinstance(node, yaml.MappingNode):
        return {key.value: _masked(value, marker) for key, value in node.value}
    return _Marker(marker)


def _masked_text(node, marker):
    """
    ``_masked`` as YAML on one line: a flow collection or a quoted scalar.
    """
    return yaml.dump(_masked(node, marker), Dumper=_MarkerDumper,
                     default_flow_style=True, width=float("inf"),
                     allow_unicode=True, sort_keys=False).rstrip("\n")


# YAML's own types, by the tags PyYAML resolves plain values to.
_YAML_TYPES = ("str", "int", "float", "bool", "null", "timestamp", "binary",
               "set", "omap", "pairs", "seq", "map")


def _short_tag(tag, key):
    """
    A YAML tag as people write it: ``!!int`` for ``tag:yaml.org,2002:int``.
    Any other tag under a secret-looking ``key`` is not repeated: it is
    likely a secret value that starts with ``!``, unquoted.
    """
    prefix = "tag:yaml.org,2002:"
    if tag.startswith(prefix) and tag[len(prefix):] in _YAML_TYPES:
        return "!!" + tag[len(prefix):]
    if looks_secret(key):
        return "a tag of its own (!...)"
    return "!!" + tag[len(prefix):] if tag.startswith(prefix) else tag


def describe_node(node):
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return "a value"
