"""
etcd's members on the certificates of ``blockmover ca etcd``, as the
local cluster starts them (``blockmover.localcluster.etcd``): they form a
cluster with them, take the control service's certificate from a client,
and refuse one the CA's revocation list names from the next connection,
without a restart.
"""

from blockmover.certificates import CONTROL, USER
from blockmover.localcluster import etcd
from tests.etcd_process import EtcdCluster


def test_members_serve_the_control_service_and_take_revocations():
    with EtcdCluster(3) as cluster:
        member = cluster.members[0]
        assert etcd.healthy(member.client_url,
                            cluster.ca.ssl_context(CONTROL, None))
        departed = cluster.ca.ssl_context(USER, "departed")
        assert etcd.healthy(member.client_url, departed)
        cluster.ca.revoke(USER, "departed")
        assert not etcd.healthy(member.client_url, departed)
        [serial] = [entry.serial for entry in cluster.ca.authority.issued
                    if entry.identity.name == "departed"]
        # etcd writes the serial's bytes in hex, a leading zero too.
        written = serial.to_bytes((serial.bit_length() + 7) // 8, "big")
        assert "certificate serial %s revoked" % (written.hex(),) in \
            cluster.log(member)
        # Its peers and the control service's certificate are untouched.
        cluster.wait_healthy(cluster.members, timeout=30)
