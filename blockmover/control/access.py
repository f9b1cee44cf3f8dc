"""
Who may do what with the control service's API. Both answers come from the
client's certificate alone, never from the URL or the body: ``Authority``
says who the client is (checked against the CA and its revocation list on
every request, so a revocation counts at once), ``decide`` whether that
identity may make a request, by one table, ``RULES``.

- A user puts and reads the configuration and reads the state and the
  volume listing.
- A node reads only its own desired slice, writes only its own state, and
  asks for the cloud calls of only its own volumes.
- A user fences a node or confirms it down (``blockmover node``).
- A user lists the volumes kept after pushes and removes them
  (``blockmover volume``).
- The metrics scraper (``blockmover ca metrics``) and users read the
  Prometheus metrics, ``/metrics``; the scraper nothing else.
- A replica of the control service tells the leading one which nodes
  polled it (``POST /v1/replicas/renewals``); its certificate opens
  nothing else. An etcd member's (``blockmover ca etcd``) opens nothing:
  no rule names it, it is for etcd's clients and peers alone.
"""

import datetime
import time
import weakref

from pyrsistent import PClass, field

from blockmover import certificates
from blockmover.certificates import CONTROL, METRICS, NODE, USER

# The placeholders of a path: the node whose objects they are, and a
# volume (any id: the service itself says which it knows).
NODE_PART = "{node}"
VOLUME_PART = "{volume}"


class Refused(Exception):
    """
    The request is not allowed (403); the message names the identity and
    what it tried.
    """


class Rule(PClass):
    """
    ``method`` on the path ``parts`` (``NODE_PART`` matching any node's
    name, ``VOLUME_PART`` any volume id) is allowed to identities of
    ``kind``; with ``own``, only to the node the path names.
    """
    method = field(type=str, mandatory=True)
    parts = field(type=tuple, mandatory=True)
    kind = field(type=str, mandatory=True)
    own = field(type=bool, mandatory=True, initial=False)
    why = field(type=str, mandatory=True)

    def node_of(self, parts):
        """
        The node ``parts`` names if they match this rule's path (ignoring
        the method), "" for a match naming none, or None for no match.
        """
        if len(parts) != len(self.parts):
            return None
        node = ""
        for pattern, part in zip(self.parts, parts):
            if pattern == NODE_PART:
                node = part
            elif pattern != VOLUME_PART and pattern != part:
                return None
        return node


RULES = tuple([
    Rule(method="GET", parts=("v1", "configuration"), kind=USER,
         why="the configuration is the operators'"),
    Rule(method="PUT", parts=("v1", "configuration"), kind=USER,
         why="only an operator deploys a configuration"),
    Rule(method="GET", parts=("v1", "state"), kind=USER,
         why="the cluster's state is the operators'"),
    Rule(method="GET", parts=("v1", "volumes"), kind=USER,
         why="the volume listing is the operators'"),
    Rule(method="GET", parts=("v1", "volumes", "kept"), kind=USER,
         why="the volumes kept after pushes are the operators' to know"),
    Rule(method="DELETE", parts=("v1", "volumes", VOLUME_PART), kind=USER,
         why="only an operator removes a kept volume"),
    Rule(method="GET", parts=("v1", "replicas"), kind=USER,
         why="which replica leads is the operators' to know"),
    Rule(method="POST", parts=("v1", "replicas", "renewals"), kind=CONTROL,
         why="only a replica of the control service says which nodes "
         "polled it"),
    Rule(method="GET", parts=("v1", "nodes", NODE_PART, "desired"),
         kind=NODE, own=True, why="a node reads only its own slice"),
    Rule(method="PUT", parts=("v1", "nodes", NODE_PART, "state"),
         kind=NODE, own=True, why="a node reports only its own state"),
] + [
    Rule(method="POST",
         parts=("v1", "nodes", NODE_PART, "volumes", call),
         kind=NODE, own=True,
         why="a node asks for the cloud calls of only its own volumes")
    for call in ("create", "attach", "detach", "grow", "formatted", "seen")
] + [
    Rule(method="POST", parts=("v1", "nodes", NODE_PART, action),
         kind=USER, why="only an operator fences a node or confirms it "
         "down")
    for action in ("fence", "confirm-down")
] + [
    Rule(method="GET", parts=("v1", "nodes", NODE_PART, "volumes"),
         kind=NODE, own=True, why="a node reads only its own volumes"),
] + [
    Rule(method="GET", parts=("metrics",), kind=kind,
         why="the metrics are the metrics scraper's and the operators'")
    for kind in (METRICS, USER)
])


def allowed(identity, method, parts):
    """
    Whether ``identity`` may make the request ``method`` ``parts`` (the
    path's segments): exactly when a rule of ``RULES`` allows it. A path no
    rule names is allowed (its answer is a 404 or 405, which tells nothing).
    """
    return decide(identity, method, parts) is None


def decide(identity, method, parts):
    """
    None if ``identity`` may make the request, else the reason why not.
    """
    parts = tuple(parts)
    matching = [(rule, rule.node_of(parts)) for rule in RULES]
    matching = [(rule, node) for rule, node in matching if node is not None]
    if not matching:
        return None
    rules = [(rule, node) for rule, node in matching
             if rule.method == method]
    if not rules:
        # A known path, another method: the 405 says which are allowed.
        return None
    for rule, node in rules:
        if identity.kind == rule.kind and (not rule.own
                                           or identity.name == node):
            return None
    return "%s may not %s /%s: %s" % (identity, method, "/".join(parts),
                                      rules[0][0].why)


def check(identity, method, parts):
    """
    :raise Refused: if ``identity`` may not make the request.
    """
    reason = decide(identity, method, parts)
    if reason is not None:
        raise Refused(reason)


class Authority(object):
    """
    Who a client is: the identity its certificate names, once the
    certificate is checked against the cluster's CA and the revocation list
    read now (``certificates.RevocationFile``).

    The CA's signature and the identity are checked once a connection (a
    connection shows one certificate for its life: the service refuses
    renegotiation, see ``tls.ServerTLS``); validity and revocation on every
    request, so that an expiry or a revocation counts at once, even on a
    connection made before it.

    :param ca_certificate: the cluster CA's certificate (``cryptography``).
    :param revocations: a ``certificates.RevocationFile``.
    :param clock: a callable returning seconds since the epoch.
    """

    def __init__(self, ca_certificate, revocations, clock=time.time):
        self.ca_certificate = ca_certificate
        self.cluster = certificates.cluster_of(ca_certificate)
        self._revocations = revocations
        self._clock = clock
        # transport -> the ``certificates.Believed`` of its client, for as
        # long as the connection lives.
        self._issued = weakref.WeakKeyDictionary()

    def identify(self, transport):
        """
        The ``Identity`` of the client on ``transport`` (an
        ``ISSLTransport``).

        :raise Refused: if it showed no certificate, or one not to believe
            now (revoked since the connection was made, say).
        """
        known = self._issued.get(transport)
        peer = None
        if known is None:
            peer = getattr(transport, "getPeerCertificate", lambda: None)()
            if peer is None:
                raise Refused("this connection has no client certificate; "
                              "connect with TLS and a certificate of "
                              "cluster %s's CA" % (self.cluster,))
        now = datetime.datetime.fromtimestamp(self._clock(),
                                              datetime.timezone.utc)
        # The service's own file: a failure to read it is not the
        # client's, and refuses everyone until it is mended.
        revoked = self._revocations.revoked()
        try:
            if known is not None:
                certificates.check_current(known, self.ca_certificate,
                                           revoked, now)
                return known.holder
            certificate = peer.to_cryptography()
            holder = certificates.check(certificate, self.ca_certificate,
                                        revoked, now)
        except certificates.CertificateError as e:
            raise Refused("the client certificate is refused: %s" % (e,))
        self._issued[transport] = certificates.Believed.of(certificate,
                                                           holder)
        return holder
