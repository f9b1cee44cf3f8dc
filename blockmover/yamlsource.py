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


class _AnchorFound(Exception):
    """
    The text uses an anchor or an alias; ``event`` is the first.
    """
    def __init__(self, event):
        Exception.__init__(self, event)
        self.event = event


class _Loader(yaml.SafeLoader):
    """
    PyYAML's safe loader, stopping at the first anchor (``&name``) or alias
    (``*name``) before anything is built from it.
    """

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, AliasEvent) or event.anchor is not None:
            raise _AnchorFound(event)
        return yaml.SafeLoader.compose_node(self, parent, index)


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
            root = yaml.compose(text, Loader=_Loader)
        except _AnchorFound as e:
            alias = isinstance(e.event, AliasEvent)
            raise ConfigError(
                path, e.event.start_mark.line + 1, None,
                "%s %s%s is not supported: anchors and aliases are refused "
                "(they can make a small file expand without bound); write "
                "the value out in full" % (
                    "alias" if alias else "anchor", "*" if alias else "&",
                    e.event.anchor))
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
        try:
            self.data = None if root is None else self._build(root, "")
        except RecursionError:
            raise ConfigError(path, None, None, "nested too deeply to read; "
                              "write it with fewer levels of lists and "
                              "mappings")

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
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as e:
            raise self.error(key, "cannot read this value (%s); write it in "
                             "quotes" % (str(e).splitlines()[0]
                                         if str(e) else type(e).__name__,),
                             line)


def describe_node(node):
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return "a value"
