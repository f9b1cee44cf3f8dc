"""
etcd members as the local cluster and the tests run them: Debian's
``/usr/bin/etcd`` (3.4), each member speaking mutual TLS to its clients
and to its peers with a certificate of the cluster's CA (``blockmover ca
etcd``), and whether a member is healthy.
"""

import http.client
import json
import os
import ssl
from urllib.parse import urlsplit

ETCD = "/usr/bin/etcd"


def member_argv(name, data_dir, client_url, peer_url, initial_cluster,
                token, files, crl=None):
    """
    The command line of member ``name`` of a new cluster: its data in
    ``data_dir``, serving clients at ``client_url`` and peers at
    ``peer_url`` (both https), the cluster being ``initial_cluster``
    (``NAME=PEER_URL,...``) named ``token``. It presents ``files``
    (``tls.TLSFiles`` of its ``etcd`` certificate) both ways and takes
    clients and peers with certificates of ``files.ca`` only, refusing
    those ``crl`` (the CA's revocation list, if given) revokes: etcd reads
    it again at every connection. Started again on the same data, etcd
    ignores the ``--initial-*`` options and rejoins.
    """
    argv = [
        ETCD, "--name", name, "--data-dir", data_dir,
        "--listen-client-urls", client_url,
        "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url,
        "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", initial_cluster,
        "--initial-cluster-state", "new",
        "--initial-cluster-token", token,
        "--cert-file", files.certificate, "--key-file", files.key,
        "--trusted-ca-file", files.ca, "--client-cert-auth",
        "--peer-cert-file", files.certificate,
        "--peer-key-file", files.key,
        "--peer-trusted-ca-file", files.ca, "--peer-client-cert-auth",
        "--logger", "zap", "--log-outputs", "stderr",
    ]
    if crl is not None:
        argv += ["--client-crl-file", crl, "--peer-crl-file", crl]
    return argv


def member_env(environ=None):
    """
    The environment to start a member in: ours without the ``ETCD_*``
    variables Debian's etcd would read, so that only its arguments count.
    """
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if not k.startswith("ETCD_")}


def client_context(files):
    """
    An ``ssl.SSLContext`` presenting ``files`` (``tls.TLSFiles``) and
    believing only a member with a certificate of ``files.ca``, for the
    address dialled.
    """
    context = ssl.create_default_context(cafile=files.ca)
    context.load_cert_chain(files.certificate, files.key)
    return context


def healthy(client_url, context, timeout=2.0):
    """
    Whether the member at ``client_url`` answers ``GET /health`` saying it
    is healthy (it knows a leader), to a client with ``context`` (see
    ``client_context``). Blocks: call it from a tool or a thread, never
    on the reactor.
    """
    url = urlsplit(client_url)
    connection = http.client.HTTPSConnection(url.hostname, url.port,
                                             timeout=timeout,
                                             context=context)
    try:
        connection.request("GET", "/health")
        response = connection.getresponse()
        answer = json.loads(response.read())
    except (OSError, http.client.HTTPException, ValueError):
        # Not listening yet, TLS refused, cut off, or not etcd's answer.
        return False
    finally:
        connection.close()
    return response.status == 200 and isinstance(answer, dict) and \
        answer.get("health") == "true"
