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
