"""
Where each holder's TLS files are found, and what is refused before any
connection is made: the lookups in ``blockmover.tls`` and the agent's
check that its certificate is its own.
"""

import datetime
import os

import pytest

from agents.main import load_credentials
from blockmover import tls
from blockmover.certificates import CONTROL, ETCD, NODE, USER
from blockmover.config import load_agent_config
from tests.cluster_ca import cluster_ca


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _install(directory, files, stem):
    """
    Copy ``files`` into ``directory`` under ``stem`` (as an operator
    installs them), with the CA's certificate beside them.
    """
    os.makedirs(directory, exist_ok=True)
    for source, target in ((files.certificate, stem + ".crt"),
                           (files.key, stem + ".key"),
                           (files.ca, "ca.crt")):
        with open(source, "rb") as f, \
                open(os.path.join(directory, target), "wb") as out:
            out.write(f.read())


def test_given_paths_win_then_directory_then_standard_places(tmp_path,
                                                            monkeypatch):
    ca = cluster_ca("tlsfind")
    user = ca.files(USER, "alice")
    # Every path given: taken as is.
    assert tls.find_files(tls.USER_STEMS, ca=user.ca,
                          certificate=user.certificate, key=user.key) == user
    # A directory as 'blockmover ca user' wrote it: user-NAME.crt.
    found = tls.find_files(tls.USER_STEMS,
                           directory=os.path.dirname(user.certificate))
    assert found == user
    # The installed names in $BLOCKMOVER_TLS_DIR, ahead of the others.
    installed = str(tmp_path / "installed")
    _install(installed, user, "user")
    monkeypatch.setenv(tls.ENVIRONMENT, installed)
    found = tls.find_files(tls.USER_STEMS, user=True)
    assert found.certificate == os.path.join(installed, "user.crt")
    assert tls.Credentials.load(found, _now()).identity.name == "alice"


def test_nothing_found_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv(tls.ENVIRONMENT, str(tmp_path))
    with pytest.raises(tls.TLSError) as info:
        tls.find_files(tls.USER_STEMS, user=True)
    assert str(info.value).startswith(
        "no certificate found (looked for %s/user.crt, %s/user-*.crt)"
        % (tmp_path, tmp_path))


def test_two_users_in_one_directory_must_be_chosen(tmp_path):
    ca = cluster_ca("tlsfind")
    for name in ("alice", "bob"):
        files = ca.files(USER, name)
        _install(str(tmp_path), files, "user-" + name)
    with pytest.raises(tls.TLSError) as info:
        tls.find_files(tls.USER_STEMS, directory=str(tmp_path))
    assert "holds 2 certificates (user-alice.crt, user-bob.crt)" in \
        str(info.value)


def test_a_key_of_another_certificate_is_refused(tmp_path):
    ca = cluster_ca("tlsfind")
    alice, bob = ca.files(USER, "alice"), ca.files(USER, "bob")
    with pytest.raises(tls.TLSError) as info:
        tls.Credentials.load(alice.set(key=bob.key), _now())
    assert "is not the key of the certificate" in str(info.value)
    # The key's text never shows in the message.
    with open(bob.key) as f:
        assert f.read().splitlines()[1] not in str(info.value)


def test_a_certificate_of_another_ca_is_refused(tmp_path):
    ours, theirs = cluster_ca("tlsfind"), cluster_ca("tlsother")
    files = ours.files(USER, "alice").set(
        certificate=theirs.files(USER, "alice").certificate,
        key=theirs.files(USER, "alice").key)
    with pytest.raises(tls.TLSError) as info:
        tls.Credentials.load(files, _now())
    assert "not issued by cluster tlsfind's CA" in str(info.value)


AGENT = ("version: 1\nnode: node1\ncontrol: https://127.0.0.1:1\n"
         "tls: {directory: %s}\n")


@pytest.mark.parametrize("holder,extra,words", [
    ((NODE, "node2"), "", "is the certificate of node node2, but agent.yml "
     "says this is node node1"),
    ((USER, "node1"), "", "is the certificate of user node1"),
    ((CONTROL, None), "", "is the certificate of control"),
    ((ETCD, "node1"), "", "is the certificate of etcd node1"),
    ((NODE, "node1"), "cluster: elsewhere\n",
     "is a certificate of cluster tlsfind, but agent.yml says this node is "
     "of cluster elsewhere"),
])
def test_the_agent_runs_only_with_its_own_certificate(tmp_path, holder,
                                                      extra, words):
    files = cluster_ca("tlsfind").files(*holder)
    directory = str(tmp_path / "tls")
    _install(directory, files, "agent")
    config = load_agent_config(AGENT % (directory,) + extra)
    with pytest.raises(tls.TLSError) as info:
        load_credentials(config, _now())
    assert words in str(info.value)


def test_the_agent_takes_its_cluster_from_its_certificate(tmp_path):
    files = cluster_ca("tlsfind").files(NODE, "node1")
    directory = str(tmp_path / "tls")
    _install(directory, files, "node-node1")
    config = load_agent_config(AGENT % (directory,))
    assert config.cluster is None
    credentials, config = load_credentials(config, _now())
    assert config.cluster == "tlsfind"
    assert credentials.identity.name == "node1"
