"""
Hypothesis strategies for blockmover's records, and the YAML that describes
a Deployment, shared by the tests of every part.
"""

import yaml
from hypothesis import strategies as st

from blockmover.identity import dataset_id
from blockmover.model import (
    Application, BackendConfig, Deployment, Limits, Node, Port, Volume,
    VolumeSpec,
)
from blockmover.units import MiB, format_size

names = st.from_regex(r"\A[a-z][a-z0-9]{0,6}\Z")
_PRINTABLE = st.characters(min_codepoint=32, max_codepoint=126)
sizes = st.integers(min_value=1, max_value=4096).map(lambda n: n * MiB)


@st.composite
def volume_specs(draw):
    return VolumeSpec(mountpoint="/data/" + draw(names),
                      size=draw(sizes),
                      filesystem=draw(st.sampled_from(["ext4", "xfs"])))


@st.composite
def applications(draw, name=names):
    ports = draw(st.lists(st.builds(
        Port, internal=st.integers(1, 65535), external=st.integers(1, 65535)),
        max_size=2))
    return Application(
        name=draw(name),
        command=draw(st.lists(st.text("abc-_/09", min_size=1), min_size=1,
                              max_size=4)),
        ports=ports,
        environment=draw(st.dictionaries(st.from_regex(r"\A[A-Z]{1,4}\Z"),
                                         st.text(_PRINTABLE, max_size=5),
                                         max_size=2)),
        # Named apart from the environment's names: a name is in one.
        secrets=draw(st.dictionaries(st.from_regex(r"\AS_[A-Z]{1,3}\Z"),
                                     st.text(_PRINTABLE, max_size=8),
                                     max_size=2)),
        volume=draw(st.one_of(st.none(), volume_specs())))


@st.composite
def deployments(draw, min_nodes=1, max_nodes=4, max_applications=6,
                limits=st.just(Limits())):
    """
    A valid Deployment: unique names, each volume its own mountpoint and
    each port its own external number (so any placement is allowed), some
    applications placed on no node.
    """
    node_names = draw(st.lists(names, min_size=min_nodes, max_size=max_nodes,
                               unique=True))
    with_ids = draw(st.booleans())
    nodes = {n: Node(name=n, address="10.0.0.%d" % (i + 1,),
                     instance_id="i-" + n if with_ids else None)
             for i, n in enumerate(node_names)}
    app_names = draw(st.lists(names, max_size=max_applications, unique=True))
    apps = {}
    for name in app_names:
        app = draw(applications(name=st.just(name)))
        if app.volume is not None:
            app = app.set(volume=app.volume.set(mountpoint="/data/" + name))
        # External ports unique in the cluster, so any placement is allowed.
        app = app.set(ports=[p.set(external=10000 + 10 * len(apps) + i)
                             for i, p in enumerate(app.ports)])
        apps[name] = app
    placement = {}
    for name in app_names:
        node = draw(st.one_of(st.none(), st.sampled_from(node_names)))
        if node is not None:
            placement[name] = node
    replicas = draw(st.integers(min_value=1, max_value=3))
    return Deployment(cluster_name=draw(names),
                      control_url="https://127.0.0.1:4523",
                      other_control_urls=["https://127.0.0.%d:4523" % (i,)
                                          for i in range(2, replicas + 1)],
                      backend=BackendConfig(name="loopback",
                                            limits=draw(limits)),
                      nodes=nodes, applications=apps, placement=placement)


@st.composite
def listings(draw, deployment):
    """
    A volume listing for ``deployment``: volumes of some of its datasets
    and of some datasets it no longer configures, each attached to one of
    its nodes or to none.
    """
    backend_ids = sorted(n.backend_id for n in deployment.nodes.values())
    apps = sorted(deployment.applications) + draw(st.lists(
        names.map(lambda n: "gone-" + n), max_size=2, unique=True))
    volumes = []
    for i, app in enumerate(apps):
        if not draw(st.booleans()):
            continue
        volumes.append(Volume(
            volume_id="vol-%d" % (i,),
            dataset_id=dataset_id(deployment.cluster_name, app),
            size=draw(sizes),
            attached_to=draw(st.one_of(st.none(),
                                       st.sampled_from(backend_ids)))))
    return volumes


def deployment_yaml(deployment):
    """
    ``(cluster_yml, app_yml)`` texts describing ``deployment``.
    """
    backend = dict(deployment.backend.options, name=deployment.backend.name)
    limits = {k: (format_size(v) if k.endswith("size") else v)
              for k, v in deployment.backend.limits._to_dict().items()
              if v is not None}
    if limits:
        backend["limits"] = limits
    nodes = {}
    for node in deployment.nodes.values():
        nodes[node.name] = {"address": node.address}
        if node.instance_id is not None:
            nodes[node.name]["instance_id"] = node.instance_id
    cluster = {
        "version": 1,
        "cluster": {"name": deployment.cluster_name,
                    "control": (deployment.control_url
                                if not deployment.other_control_urls
                                else list(deployment.control_urls)),
                    "backend": backend},
        "nodes": nodes,
        "deployment": {n: deployment.applications_on(n)
                       for n in deployment.nodes},
    }
    apps = {}
    for app in deployment.applications.values():
        entry = {"command": list(app.command),
                 "ports": [{"internal": p.internal, "external": p.external}
                           for p in app.ports],
                 "environment": dict(app.environment),
                 "secrets": dict(app.secrets)}
        if app.image is not None:
            entry["image"] = app.image
        if app.volume is not None:
            entry["volume"] = {"mountpoint": app.volume.mountpoint,
                               "maximum_size": format_size(app.volume.size),
                               "filesystem": app.volume.filesystem}
        apps[app.name] = entry
    return (yaml.safe_dump(cluster),
            yaml.safe_dump({"version": 1, "applications": apps}))
