"""
``blockmover cluster up``: make every part of a local cluster that is
missing, recording it in the state file before it exists.
"""

import os

from blockmover import proc
from blockmover.localcluster import (
    ClusterError, cloud, namespaces, processes, state, trust,
)
from blockmover.localcluster.configs import (
    agent_config, cluster_config, write_yaml,
)
from blockmover.localcluster.etcd import member_env
from blockmover.localcluster.services import (
    CONTROL, agent_argv, agent_key, control_argv, etcd_argv, output_path,
    replica_argv, service_env, wait_for_control, wait_for_etcd,
)


def _claim(layout, echo):
    # Returns the recorded state, writing it first when the cluster is new.
    existing = state.load(layout.state_file)
    if existing is not None:
        if len(existing.layout.nodes) != len(layout.nodes) or \
                existing.layout.subnet != layout.subnet or \
                existing.layout.backend != layout.backend or \
                existing.layout.sites != layout.sites or \
                existing.layout.replicas != layout.replicas:
            raise ClusterError(
                "cluster %s is already up with %d nodes on %s.0/24 on the "
                "%s backend and %d control replicas; run `blockmover "
                "cluster down --name %s` first to change it"
                % (layout.name, len(existing.layout.nodes),
                   existing.layout.subnet, existing.layout.backend,
                   existing.layout.control_replicas, layout.name))
        echo("cluster %s is already up; making what is missing"
             % (layout.name,))
        return existing
    if namespaces.bridge_exists(layout):
        raise ClusterError(
            "the bridge %s exists but no cluster state records it: another "
            "cluster uses it; choose another --name" % (layout.bridge,))
    for netns in [node.netns for node in layout.nodes] + [
            replica.netns for replica in layout.replicas]:
        if namespaces.netns_exists(netns):
            raise ClusterError(
                "the network namespace %s exists but no cluster state "
                "records it; remove it (ip netns delete %s) or choose "
                "another --name" % (netns, netns))
    current = state.ClusterState(layout=layout)
    state.save(current)
    return current


def make_infrastructure(layout, echo, powered_off=()):
    """
    The bridge, each node's network and mount namespace, each control
    replica's network namespace, and the cluster's directories, CA,
    certificates and configuration files. The links of the nodes named in
    ``powered_off`` stay down; every replica's is up.
    """
    echo("bridge %s at %s/24" % (layout.bridge, layout.bridge_address))
    namespaces.make_bridge(layout)
    for node in layout.nodes:
        echo("%s: network namespace %s at %s"
             % (node.name, node.netns, node.address))
        namespaces.make_node_network(layout, node,
                                     link_up=node.name not in powered_off)
    for replica in layout.replicas:
        echo("%s: network namespace %s at %s"
             % (replica.name, replica.netns, replica.address))
        namespaces.make_node_network(layout, replica)
    if layout.replicated:
        namespaces.keep_host_netns(layout)
    namespaces.make_mount_ns_dir(layout)
    for node in layout.nodes:
        echo("%s: mount namespace %s" % (node.name, node.mount_ns))
        namespaces.make_node_mount_ns(node)
    directories = layout.loopback_roots + [layout.logs_dir]
    if layout.replicated:
        directories += [replica.state_dir for replica in layout.replicas]
        # etcd makes each member's data directory itself (0700).
        directories += list({os.path.dirname(member.data_dir)
                             for member in layout.etcd_members})
    else:
        directories.append(layout.control_state_dir)
    for directory in directories:
        os.makedirs(directory, exist_ok=True)
    if layout.uses_cloud:
        cloud.write_files(layout)
        echo("OpenStack emulator files in %s (secrets readable by root "
             "only)" % (layout.cloud_dir,))
    made, issued = trust.ensure(layout)
    echo("cluster CA %s in %s (readable by root only)"
         % ("made" if made else "kept", layout.ca_dir))
    if issued:
        echo("certificates issued to %s" % (
            ", ".join(str(holder) for holder in issued),))
    if not os.path.exists(layout.cluster_yml):
        write_yaml(layout.cluster_yml, cluster_config(layout))
    for node in layout.nodes:
        os.makedirs(node.agent_state_dir, exist_ok=True)
        write_yaml(node.agent_config, agent_config(layout, node))


def _stages(current):
    """
    ``[[(key, argv)]]``: the services the cluster state ``current`` runs,
    in stages that start in order, each ready before the next starts: the
    OpenStack emulator (on that backend); the etcd members (together: one
    alone has no majority to be ready with); the control service or its
    replicas; the agent of each node not powered off.
    """
    layout = current.layout
    stages = []
    if layout.uses_cloud:
        stages.append([(cloud.CLOUD, cloud.cloud_argv(layout))])
    if layout.replicated:
        stages.append([(member.name, etcd_argv(layout, member))
                       for member in layout.etcd_members])
        stages.append([(replica.name, replica_argv(layout, replica))
                       for replica in layout.replicas])
    else:
        stages.append([(CONTROL, control_argv(layout))])
    stages.append([(agent_key(node), agent_argv(node))
                   for node in layout.nodes
                   if node.name not in current.powered_off])
    return stages


def wanted_services(current):
    """
    ``[(key, argv)]``: the services the cluster state ``current`` runs, in
    the order they start (see ``_stages``).
    """
    return [service for stage in _stages(current) for service in stage]


def _environments(layout):
    """
    key -> the environment the service ``key`` starts in.
    """
    env = service_env(layout)
    # The agents hold no cloud credentials: they ask the control service.
    agent_env = service_env(layout, cloud_credentials=False)
    environments = {agent_key(node): agent_env for node in layout.nodes}
    environments.update({member.name: member_env(env)
                         for member in layout.etcd_members})
    for key in [CONTROL, cloud.CLOUD] + [r.name for r in layout.replicas]:
        environments[key] = env
    return environments


def _wait_ready(current, started, echo):
    """
    Wait until the services just ``started`` (key -> record), all of one
    stage, are ready.
    """
    layout = current.layout
    if cloud.CLOUD in started:
        record = started[cloud.CLOUD]
        cloud.wait_for_cloud(layout, lambda: proc.is_running(record),
                             output_path(layout, cloud.CLOUD))
        echo("OpenStack emulator answers at %s" % (layout.cloud_url,))
    if CONTROL in started:
        record = started[CONTROL]
        wait_for_control(layout, trust.operator_credentials(layout),
                         lambda: proc.is_running(record))
        echo("control service answers at %s" % (layout.control_url,))
    if any(member.name in started for member in layout.etcd_members):
        wait_for_etcd(layout, current.processes)
        echo("etcd's %d members are healthy at %s"
             % (len(layout.etcd_members), ", ".join(layout.etcd_endpoints)))
    for replica in layout.replicas:
        if replica.name in started:
            record = started[replica.name]
            wait_for_control(layout, trust.operator_credentials(layout),
                             lambda: proc.is_running(record),
                             replica=replica)
            echo("%s answers at %s" % (replica.name, replica.url))


def start_missing(current, echo):
    """
    Start the OpenStack emulator (on that backend), the etcd members and
    the control replicas (or the one control service) and every agent not
    running now, stage by stage, recording each the moment it starts;
    return the new state.
    """
    layout = current.layout
    environments = _environments(layout)
    for name in sorted(current.powered_off):
        echo("%s is powered off: its agent stays down (blockmover cluster "
             "power on %s)" % (name, name))
    for stage in _stages(current):
        started = {}
        for key, argv in stage:
            record = current.processes.get(key)
            if record is not None and proc.is_running(record):
                continue
            if key == cloud.CLOUD:
                cloud.forget_url(layout)
            record = processes.start(argv, output_path(layout, key),
                                     env=environments[key])
            current = current.set(
                processes=current.processes.set(key, record))
            state.save(current)
            echo("%s started (pid %d)" % (key, record.pid))
            started[key] = record
        _wait_ready(current, started, echo)
    return current


def up(layout, echo=print, services=True):
    """
    Bring the cluster ``layout`` describes up, or finish bringing it up:
    safe to run again at any time. With ``services`` False, only the
    namespaces, directories and files are made.

    :return: the recorded ``ClusterState``.
    :raise ClusterError: the cluster cannot be made as asked.
    """
    current = _claim(layout, echo)
    make_infrastructure(current.layout, echo, current.powered_off)
    if services:
        current = start_missing(current, echo)
    echo("cluster %s is up: %s; state in %s"
         % (layout.name, ", ".join("%s %s" % (n.name, n.address)
                                   for n in list(current.layout.nodes)
                                   + list(current.layout.replicas)),
            current.layout.state_dir))
    echo(trust.operator_hint(current.layout))
    return current
