"""
libyaml composes what PyYAML's own loader would, marks and all: a
configuration reads the same, with the same lines in its errors and the
same redaction, whichever composed it; a text it may not compose (an
anchor, an alias, a mistake) is composed by the loader that refuses
anchors and words the errors.
"""

import pytest
import yaml

from blockmover import yamlsource
from blockmover.yamlsource import ConfigError, Source

TEXTS = [
    "",
    "version: 1\n",
    "version: 1\ncluster:\n  name: c\n  control: https://10.0.0.1:4523\n"
    "nodes:\n  node1: {address: 10.0.0.2}\n  node2:\n    address: 10.0.0.3\n"
    "deployment:\n  node1: [web, db]\n  node2: []\n",
    # Comments, quotes, block scalars, Unicode, CRLF line ends.
    "# top\napplications:\n  web:   # the site\n    command: ['a b', \"c\"]\n"
    "    environment: {GREETING: \"h\\u00e9llo\"}\n    note: |\n"
    "      line one\n      line two\n",
    "applications:\r\n  web:\r\n    command: [serve]\r\n"
    "    secrets: {password: hunter2, token: \"x y\"}\r\n",
    "\u00e9t\u00e9: caf\u00e9\nlist:\n- 1\n- 2.5\n- true\n- null\n- ~\n",
    "a: {b: [1, {c: d}], e: 'f'}\n",
]


def _nodes(node):
    """
    Every node under ``node`` with what a reader of marks relies on.
    """
    if node is None:
        return [None]
    found = [(type(node).__name__, node.tag,
              node.value if isinstance(node, yaml.ScalarNode) else None,
              node.start_mark.line, node.start_mark.column,
              node.start_mark.index, node.end_mark.index)]
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found += _nodes(item)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            found += _nodes(key) + _nodes(value)
    return found


@pytest.mark.skipif(yamlsource._FAST_LOADER is None,
                    reason="PyYAML was built without libyaml here")
@pytest.mark.parametrize("text", TEXTS)
def test_libyaml_composes_the_same_nodes(text):
    fast = yamlsource._compose(text)
    slow = yamlsource._compose(text, fast_loader=None)
    assert _nodes(fast) == _nodes(slow)


@pytest.mark.parametrize("text", TEXTS)
def test_a_source_reads_the_same_either_way(text, monkeypatch):
    fast = Source(text, "f.yml")
    monkeypatch.setattr(yamlsource, "_FAST_LOADER", None)
    monkeypatch.setattr(yamlsource._compose, "__defaults__", (None,))
    slow = Source(text, "f.yml")
    assert fast.data == slow.data
    assert fast._lines == slow._lines
    secret = yamlsource.looks_secret
    assert fast.redacted(secret, "<r>") == slow.redacted(secret, "<r>")


@pytest.mark.parametrize("text, message", [
    ("a: &x 1\nb: 2\n", "anchor &x is not supported"),
    ("a: 1\nb: *x\n", "alias *x is not supported"),
    ("a: [1, 2\nb: 3\n", "not valid YAML"),
    ("a: 1\na: 2\n", "'a' appears twice"),
    ("[" * 5000 + "]" * 5000, "nested too deeply"),
])
def test_refusals_are_worded_by_the_refusing_loader(text, message):
    with pytest.raises(ConfigError) as raised:
        Source(text, "f.yml")
    assert message in str(raised.value)


def test_a_star_in_a_value_is_read_by_the_careful_loader():
    source = Source("command: [ls, '*.log']\n", "f.yml")
    assert source.data == {"command": ["ls", "*.log"]}


def test_a_source_kept_for_long_lets_go_of_its_nodes():
    source = Source(TEXTS[4], "app.yml")
    source.let_go_of_nodes()
    assert source.data["applications"]["web"]["command"] == ["serve"]
    assert source.line("applications.web.secrets") == 4
    with pytest.raises(ValueError):
        source.redacted(yamlsource.looks_secret, "<r>")
