"""
``blockmover cluster down``: remove everything a local cluster's state file
records, in the order that frees each part before the next: processes
(agents, control service or replicas, etcd members), the nodes' mounts,
the mount namespaces, the loop devices, the network, the state directory
(with etcd's data). Works after a crash at any point, and again after a
failed attempt.
"""

import shutil

from blockmover import proc
from blockmover.command import CommandFailed
from blockmover.localcluster import (
    ClusterError, cloud, namespaces, processes, state,
)
from blockmover.localcluster.devices import (
    detach_loop_devices_under, loop_devices_under,
)
from blockmover.localcluster.mounts import (
    is_mountpoint, node_made_mounts, unmount_in_namespace,
)


def _stop_services(current, echo):
    layout = current.layout
    # In order: the agents, the emulator, the control service or its
    # replicas, and only then the etcd members they keep their state in.
    etcd_members = {member.name for member in layout.etcd_members}
    for key, record in sorted(current.processes.items(),
                              key=lambda item: (item[0] in etcd_members,
                                                item[0])):
        if proc.stop(record, processes.STOP_TIMEOUT):
            echo("%s stopped (pid %d)" % (key, record.pid))
    # A control service started by an ``up`` that crashed before recording
    # it: found by its state directory, which only this cluster uses.
    for what, state_dir in [("control service", layout.control_state_dir)] + [
            (replica.name, replica.state_dir) for replica in layout.replicas]:
        for record in processes.records_with_arguments("--state-dir",
                                                       state_dir):
            if proc.stop(record, processes.STOP_TIMEOUT):
                echo("unrecorded %s stopped (pid %d)" % (what, record.pid))
    # Whatever else runs in a replica's namespace: a fence command the
    # replica started, say.
    for replica in layout.replicas:
        for record in processes.records_in_netns(replica.netns_path):
            if proc.stop(record, processes.STOP_TIMEOUT):
                echo("%s: process %d stopped" % (replica.name, record.pid))
    # Likewise an etcd member, by its data directory.
    for member in layout.etcd_members:
        for record in processes.records_with_arguments("--data-dir",
                                                       member.data_dir):
            if proc.stop(record, processes.STOP_TIMEOUT):
                echo("unrecorded %s stopped (pid %d)" % (member.name,
                                                         record.pid))
    # Likewise an emulator, by its state directory (the backend root).
    for record in processes.records_with_arguments(
            "--state-dir", current.layout.backend_root):
        if proc.stop(record, processes.STOP_TIMEOUT):
            echo("unrecorded OpenStack emulator stopped (pid %d)"
                 % (record.pid,))


def _stop_applications(current, echo):
    layout = current.layout
    # The agents leave their applications running when they stop (as
    # systemd's KillMode=process does): stop them by their records, then
    # anything else still inside a node.
    for node in layout.nodes:
        for name, record in sorted(
                processes.application_records(
                    node.agent_state_dir).items()):
            if proc.stop(record, processes.STOP_TIMEOUT):
                echo("%s: application %s stopped (pid %d)"
                     % (node.name, name, record.pid))
        for record in processes.records_in_netns(node.netns_path):
            if proc.stop(record, processes.STOP_TIMEOUT):
                echo("%s: process %d stopped" % (node.name, record.pid))


def _unmount_nodes(current, echo):
    layout = current.layout
    devices = [d for root in layout.loopback_roots
               for d in loop_devices_under(root)]
    for node in layout.nodes:
        if not is_mountpoint(node.mount_ns):
            continue
        for mount in node_made_mounts(node.mount_ns, devices):
            unmount_in_namespace(node.mount_ns, mount.mountpoint)
            echo("%s: unmounted %s" % (node.name, mount.mountpoint))


def _remove_mount_namespaces(current, echo):
    layout = current.layout
    for node in layout.nodes:
        namespaces.remove_node_mount_ns(node)
    namespaces.remove_mount_ns_dir(layout)
    echo("mount namespaces removed")


def _clean_cloud(current, echo):
    layout = current.layout
    if layout.uses_cloud:
        # The emulator has stopped: detach its loop devices and remove its
        # attachment links and volumes.
        cloud.cleanup(layout)
        echo("OpenStack emulator's devices and state removed")


def _detach_devices(current, echo):
    layout = current.layout
    for root in layout.loopback_roots:
        for device in detach_loop_devices_under(root):
            echo("detached %s" % (device,))


def _remove_network(current, echo):
    layout = current.layout
    for node in list(layout.nodes) + list(layout.replicas):
        namespaces.remove_node_network(node)
    if layout.replicated:
        namespaces.forget_host_netns(layout)
    namespaces.remove_bridge(layout)
    echo("network namespaces, veths and bridge %s removed"
         % (layout.bridge,))


def down(state_file, echo=print):
    """
    Take down the cluster recorded in ``state_file``. A missing state file
    means nothing to do.

    :return: True when there was a cluster to take down.
    :raise ClusterError: some part could not be removed (the state file
        is kept, so running down again finishes the job).
    """
    current = state.load(state_file)
    if current is None:
        echo("no cluster is recorded in %s; nothing to take down"
             % (state_file,))
        return False
    layout = current.layout
    echo("taking down cluster %s" % (layout.name,))
    failures = []
    for step in (_stop_services, _stop_applications, _unmount_nodes,
                 _remove_mount_namespaces, _clean_cloud, _detach_devices,
                 _remove_network):
        try:
            step(current, echo)
        except (CommandFailed, ClusterError, OSError,
                proc.StillRunning) as e:
            echo("could not finish %s: %s" % (step.__name__.strip("_")
                                              .replace("_", " "), e))
            failures.append(e)
    if failures:
        raise ClusterError(
            "cluster %s is only partly down (%d steps failed, see above); "
            "run `blockmover cluster down --name %s` again"
            % (layout.name, len(failures), layout.name))
    shutil.rmtree(layout.state_dir)
    echo("cluster %s is down" % (layout.name,))
    return True
