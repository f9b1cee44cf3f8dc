"""
``blockmover ca``: make the cluster's CA, issue the certificates of the
control service, the nodes, the operators, the metrics scraper and the
members of etcd, revoke them, list them.
"""

import argparse
import datetime
import os

from blockmover import ca, certificates
from blockmover.certificates import (
    CONTROL, ETCD, METRICS, NODE, USER, CertificateError,
)

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2

# Where the holder of each kind of certificate keeps its files: the
# defaults of the programs that read them.
INSTALLED = {
    CONTROL: ("/etc/blockmover/control.crt", "/etc/blockmover/control.key",
              "on every host that runs blockmover-control"),
    NODE: ("/etc/blockmover/agent.crt", "/etc/blockmover/agent.key",
           "on node %s"),
    USER: ("~/.config/blockmover/user.crt", "~/.config/blockmover/user.key",
           "on the machine user %s runs blockmover from"),
    METRICS: ("/etc/prometheus/blockmover/metrics.crt",
              "/etc/prometheus/blockmover/metrics.key",
              "on the Prometheus server that scrapes the cluster"),
    # Beside Debian's etcd-server, readable by its user etcd.
    ETCD: ("/etc/etcd/blockmover/etcd.crt", "/etc/etcd/blockmover/etcd.key",
           "on the host of etcd member %s"),
}
INSTALLED_CA = "/etc/blockmover/ca.crt"
INSTALLED_USER_CA = "~/.config/blockmover/ca.crt"
INSTALLED_METRICS_CA = "/etc/prometheus/blockmover/ca.crt"
INSTALLED_ETCD_CA = "/etc/etcd/blockmover/ca.crt"
INSTALLED_ETCD_CRL = "/etc/etcd/blockmover/crl.pem"
# The kinds of certificate that name no holder.
_UNNAMED = (CONTROL, METRICS)
INSTALLED_CRL = "/etc/blockmover/crl.pem"

_EXIT_STATUS = """\
exit status:
  0  done
  1  refused or failed: the message says why and what to do (nothing was
     changed that the message does not name)
  2  bad command line
"""

_DESCRIPTION = """\
Keep the cluster's certificate authority and issue the certificates its
parts show each other: the control service's, one per node (its agent),
one per operator, the one Prometheus scrapes the metrics with, and one per
member of the etcd cluster the control service's replicas keep their state
in. Each certificate names its cluster and what it is (control, node NAME,
user NAME, metrics, etcd NAME).

The CA lives in one directory (--dir, default %(dir)s,
0700): ca.crt, ca.key (0600, never copy it), issued.json (every
certificate issued, so that revoke finds them by name) and crl.pem (the
revocation list).
Certificates are written into --out (default: the current directory) as
<stem>.crt, <stem>.key (0600) and ca.crt; copy each where its --help says.

The control service, the agents and blockmover-deploy read these files
for their mutual TLS (see blockmover-control --help); the control service
refuses a revoked certificate as soon as its crl.pem is replaced.
""" % {"dir": ca.DEFAULT_DIR}

_EPILOG = """\
examples:
  blockmover ca init --cluster demo
  blockmover ca control --address 10.77.0.1 --address control.example.com
  blockmover ca node node1 --out /tmp/node1
  blockmover ca user alice
  blockmover ca metrics --out /tmp/prometheus
  blockmover ca etcd etcd1 --address 10.77.0.5 --out /tmp/etcd1
  blockmover ca revoke node node1
  blockmover ca list

""" + _EXIT_STATUS


def _days(text):
    try:
        days = int(text)
    except ValueError:
        days = 0
    if days < 1:
        raise argparse.ArgumentTypeError("%r is not a whole number of days "
                                         "from 1" % (text,))
    return days


def _common(parser, out=False):
    parser.add_argument("--dir", default=ca.DEFAULT_DIR,
                        help="the CA's directory (default %(default)s)")
    if out:
        parser.add_argument("--out", default=".",
                            help="where to write the certificate, its key "
                            "and ca.crt (default: the current directory)")
        parser.add_argument("--days", type=_days, default=ca.LEAF_DAYS,
                            help="how long the certificate is valid "
                            "(default %(default)s)")
        parser.add_argument("--force", action="store_true",
                            help="replace a certificate or key of the same "
                            "name in --out")


_CONTROL_FILES = """\
files (in --out):
  control.crt  copy to %s on every host that runs
               blockmover-control
  control.key  copy to %s there (0600: root only)
  ca.crt       copy to %s there, and on every host of the
               cluster

The certificate serves clients at every --address, and is the client
certificate a replica shows etcd and the leading replica.
""" % (INSTALLED[CONTROL][0], INSTALLED[CONTROL][1], INSTALLED_CA)

_NODE_FILES = """\
files (in --out):
  node-NAME.crt  copy to %s on node NAME
  node-NAME.key  copy to %s there (0600: root only)
  ca.crt         copy to %s there, and on every host of the
                 cluster
""" % (INSTALLED[NODE][0], INSTALLED[NODE][1], INSTALLED_CA)

_USER_FILES = """\
files (in --out):
  user-NAME.crt  copy to %s on the machine the
                 operator runs blockmover-deploy and blockmover from
  user-NAME.key  copy to %s there (0600: for the
                 operator only)
  ca.crt         copy to %s there
""" % (INSTALLED[USER][0], INSTALLED[USER][1], INSTALLED_USER_CA)


_METRICS_FILES = """\
files (in --out):
  metrics.crt  copy to %s on the Prometheus
               server (its scrape config's tls_config cert_file)
  metrics.key  copy to %s there (readable by
               Prometheus only: its key_file)
  ca.crt       copy to %s there (its ca_file)

The metrics certificate reads /metrics of the control service and of every
agent that serves them (agent.yml's metrics:), and nothing else.
""" % (INSTALLED[METRICS][0], INSTALLED[METRICS][1], INSTALLED_METRICS_CA)


_ETCD_FILES = """\
files (in --out):
  etcd-NAME.crt  copy to %s on the host of
                 etcd member NAME: etcd's --cert-file and
                 --peer-cert-file
  etcd-NAME.key  copy to %s there, readable only
                 by the user etcd runs as: --key-file and --peer-key-file
  ca.crt         copy to %s there: --trusted-ca-file
                 and --peer-trusted-ca-file, with --client-cert-auth and
                 --peer-client-cert-auth

The member serves etcd's clients (the control service's replicas) and its
peers at every --address, and dials its peers with the same certificate.
It opens nothing of the control service's API. Give etcd the CA's crl.pem
(copied to %s) as --client-crl-file and
--peer-crl-file: it reads the file at every connection.
""" % (INSTALLED[ETCD][0], INSTALLED[ETCD][1], INSTALLED_ETCD_CA,
       INSTALLED_ETCD_CRL)


def add_parser(commands):
    """
    Add ``ca`` and its actions to ``commands`` (an argparse subparsers
    object); each action's ``run(args)`` returns the exit status.
    """
    top = commands.add_parser(
        "ca", help="the cluster's CA: make it, issue, revoke and list "
        "certificates", description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = top.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    def action(name, help, epilog, run, out=False):
        parser = actions.add_parser(
            name, help=help, description=help[0].upper() + help[1:] + ".",
            epilog=epilog + "\n" + _EXIT_STATUS,
            formatter_class=argparse.RawDescriptionHelpFormatter)
        _common(parser, out)
        parser.set_defaults(run=run, parser=parser)
        return parser

    init = action(
        "init", "make the cluster's CA in --dir",
        "files (in --dir, made 0700):\n"
        "  ca.crt       the CA's certificate: copy it to %s\n"
        "               on every host of the cluster\n"
        "  ca.key       its key (0600): it never leaves this directory\n"
        "  crl.pem      the revocation list: copy it to %s\n"
        "               on every host that runs blockmover-control\n"
        "  issued.json  every certificate issued\n"
        % (INSTALLED_CA, INSTALLED_CRL), _init)
    init.add_argument("--cluster", required=True,
                      help="the cluster's name, as in cluster.yml's "
                      "cluster.name")
    init.add_argument("--days", type=_days, default=ca.CA_DAYS,
                      help="how long the CA is valid (default "
                      "%(default)s)")
    init.add_argument("--force", action="store_true",
                      help="replace a CA already in --dir, and so make "
                      "every certificate it issued useless")

    control = action(
        "control", "issue the control service's certificate, for the "
        "addresses it serves at",
        _CONTROL_FILES, _control, out=True)
    control.add_argument("--address", action="append", required=True,
                         metavar="IP_OR_NAME",
                         help="an IP address or DNS name clients reach the "
                         "control service at; give one --address for each "
                         "(all replicas' addresses, or issue one per "
                         "replica)")

    node = action(
        "node", "issue the certificate of node NAME's agent",
        _NODE_FILES, _node, out=True)
    node.add_argument("name", metavar="NAME",
                      help="the node's name, as in cluster.yml's nodes:")
    node.add_argument("--address", action="append", default=[],
                      metavar="IP_OR_NAME",
                      help="an address peers reach the node at (its name "
                      "is in the certificate already)")

    user = action(
        "user", "issue the certificate of operator NAME",
        _USER_FILES, _user, out=True)
    user.add_argument("name", metavar="NAME", help="the operator's name")

    action("metrics", "issue the certificate Prometheus scrapes the "
           "cluster's metrics with", _METRICS_FILES, _metrics, out=True)

    etcd = action(
        "etcd", "issue the certificate of etcd member NAME, for the "
        "addresses it serves at", _ETCD_FILES, _etcd, out=True)
    etcd.add_argument("name", metavar="NAME",
                      help="the member's name, as etcd's --name")
    etcd.add_argument("--address", action="append", required=True,
                      metavar="IP_OR_NAME",
                      help="an IP address or DNS name clients and peers "
                      "reach the member at; give one --address for each")

    revoke = action(
        "revoke", "revoke every certificate issued so far to control, "
        "metrics, node NAME, user NAME or etcd NAME",
        "files (in --dir):\n"
        "  crl.pem  the new revocation list: copy it to %s\n"
        "           on every host that runs blockmover-control, and to\n"
        "           %s on every etcd member's\n"
        "\n"
        "A certificate issued to the same name afterwards is valid: revoke\n"
        "what was lost or leaked, then issue anew.\n"
        % (INSTALLED_CRL, INSTALLED_ETCD_CRL),
        _revoke)
    revoke.add_argument("kind", choices=(CONTROL, METRICS, NODE, USER,
                                         ETCD),
                        help="what the certificate is of")
    revoke.add_argument("name", metavar="NAME", nargs="?",
                        help="the node's, user's or etcd member's name")

    action("list", "list every certificate issued, with its state", "",
           _list)
    return top


def _issue(args, holder, addresses=()):
    authority = ca.load(args.dir)
    holder = authority.identity(*holder)
    # Refused before issuing, so a refusal leaves nothing in the index.
    certificates.subject_alternative_names(addresses)
    ca.refuse_overwrite(args.out, holder,
                        certificates.certificate_pem(authority.certificate),
                        args.force)
    issued = authority.issue(holder, addresses, args.days)
    certificate_path, key_path, ca_path = ca.write_issued(issued, args.out,
                                                          args.force)
    certificate = certificates.load_certificate(issued.certificate)
    print("issued %s of cluster %s (serial %x), valid until %s"
          % (holder, authority.cluster, certificate.serial_number,
             certificate.not_valid_after_utc.date()))
    installed_certificate, installed_key, host = INSTALLED[holder.kind]
    if holder.kind == USER:
        installed_ca = INSTALLED_USER_CA + " there"
    elif holder.kind == METRICS:
        installed_ca = INSTALLED_METRICS_CA + " there"
    elif holder.kind == ETCD:
        installed_ca = INSTALLED_ETCD_CA + " there"
    else:
        installed_ca = INSTALLED_CA + " there, and on every host"
    width = max(len(path) for path in (certificate_path, key_path, ca_path))
    for path, where in (
            (certificate_path, "%s %s" % (
                installed_certificate,
                host % (holder.name,) if "%s" in host else host)),
            (key_path, "%s there (keep it 0600)" % (installed_key,)),
            (ca_path, installed_ca)):
        print("  %s  copy to %s" % (path.ljust(width), where))
    return EXIT_OK


def _init(args):
    authority = ca.init(args.dir, args.cluster, args.days, args.force)
    print("made the CA of cluster %s in %s, valid until %s"
          % (authority.cluster, args.dir,
             authority.certificate.not_valid_after_utc.date()))
    print("  %s: copy to %s on every host"
          % (os.path.join(args.dir, ca.CA_CERTIFICATE), INSTALLED_CA))
    return EXIT_OK


def _control(args):
    return _issue(args, (CONTROL,), args.address)


def _node(args):
    return _issue(args, (NODE, args.name), args.address)


def _user(args):
    return _issue(args, (USER, args.name))


def _metrics(args):
    return _issue(args, (METRICS,))


def _etcd(args):
    return _issue(args, (ETCD, args.name), args.address)


def _revoke(args):
    if (args.kind in _UNNAMED) != (args.name is None):
        args.parser.error("give a name after node, user or etcd, and none "
                          "after control or metrics")
    authority = ca.load(args.dir)
    holder = authority.identity(args.kind, args.name)
    revoked = authority.revoke(holder)
    if revoked:
        print("revoked %d certificate%s of %s: %s"
              % (len(revoked), "" if len(revoked) == 1 else "s", holder,
                 ", ".join("%x" % (entry.serial,) for entry in revoked)))
    else:
        print("every certificate of %s was revoked already" % (holder,))
    print("  %s: copy to %s on every host that runs blockmover-control,"
          " to %s on every etcd member's, and to the file an agent's "
          "metrics: crl: names on each node that serves metrics"
          % (os.path.join(args.dir, ca.CRL), INSTALLED_CRL,
             INSTALLED_ETCD_CRL))
    return EXIT_OK


def _list(args):
    authority = ca.load(args.dir)
    now = datetime.datetime.now(datetime.timezone.utc)
    print("CA of cluster %s, valid until %s"
          % (authority.cluster,
             authority.certificate.not_valid_after_utc.date()))
    rows = [("IDENTITY", "SERIAL", "VALID UNTIL", "STATE")]
    for entry in authority.issued:
        if entry.revoked_at is not None:
            state = "revoked %s" % (entry.revoked_at.date(),)
        elif entry.not_after < now:
            state = "expired"
        else:
            state = "valid"
        rows.append((str(entry.identity), "%x" % (entry.serial,),
                     str(entry.not_after.date()), state))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width
                        in zip(row, widths)) + "  " + row[3])
    return EXIT_OK


def run(args, stderr):
    """
    Run the action ``args`` names; a refusal is printed to ``stderr`` as one
    line saying what to do.

    :return: the exit status.
    """
    try:
        return args.run(args)
    except CertificateError as e:
        stderr.write("blockmover ca: %s\n" % (e,))
    except OSError as e:
        stderr.write("blockmover ca: cannot use %s (%s); check that its "
                     "directory exists and that you may write there (root "
                     "for /etc/blockmover)\n" % (e.filename, e.strerror))
    return EXIT_REFUSED
