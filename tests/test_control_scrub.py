"""
Secrets never leave the control service in a configuration it shows.
"""

import yaml

from blockmover.control.scrub import REDACTED, scrub_yaml

CLUSTER = """\
version: 1
cluster:
  name: demo
  backend:
    name: openstack
    cloud: mycloud
    password: "hunter2"
    auth_token: abc123  # from keystone
    options: {region: r1, client_secret: 'x y', tokenless: 1}
    credentials:
      user: admin
      key: k3y
    private_key: |
      -----BEGIN KEY-----
      bXlrZXk=
  control: https://10.77.0.1:4523
nodes:
  node1: {address: 10.77.0.11}
"""


def test_secret_values_are_redacted_and_the_rest_kept():
    scrubbed = scrub_yaml(CLUSTER)
    for secret in ("hunter2", "abc123", "x y", "admin", "k3y", "bXlrZXk",
                   "BEGIN KEY"):
        assert secret not in scrubbed
    data = yaml.safe_load(scrubbed)
    backend = data["cluster"]["backend"]
    assert backend["password"] == REDACTED
    assert backend["auth_token"] == REDACTED
    assert backend["options"] == {"region": "r1", "client_secret": REDACTED,
                                  "tokenless": REDACTED}
    assert backend["credentials"] == {"user": REDACTED, "key": REDACTED}
    assert backend["cloud"] == "mycloud"
    assert data["cluster"]["control"] == "https://10.77.0.1:4523"
    assert data["nodes"] == {"node1": {"address": "10.77.0.11"}}


def test_text_without_secrets_is_unchanged():
    text = CLUSTER.split("    password")[0] + "nodes: {}\n"
    assert scrub_yaml(text) == text


def test_flow_style_under_a_secret_key_stays_yaml():
    """
    A secret-looking key holding a flow mapping or list is redacted whole,
    its keys kept, and the text still parses (a line-based scrub cut such a
    value at its first comma, leaving the rest of it shown).
    """
    text = ("backend:\n  credentials: {user: admin, key: k3y}\n"
            "  tokens: [t1, t2]  # t0\n  name: openstack\n")
    scrubbed = scrub_yaml(text)
    for secret in ("admin", "k3y", "t0", "t1", "t2"):
        assert secret not in scrubbed
    assert yaml.safe_load(scrubbed) == {"backend": {
        "credentials": {"user": REDACTED, "key": REDACTED},
        "tokens": [REDACTED, REDACTED], "name": "openstack"}}
