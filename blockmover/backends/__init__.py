"""
Block-storage backends, each an ``IBlockDeviceAPI``, chosen by name.
"""

BACKENDS = ("loopback", "openstack")


class UnknownBackend(ValueError):
    pass


def make_backend(name, options, cluster_name, instance_id=None):
    """
    The backend called ``name``, configured with ``options`` (a mapping of
    strings, from ``cluster.yml`` or ``agent.yml``), for the volumes of
    ``cluster_name``. ``instance_id`` is this node's backend id where the
    caller knows it (an agent); the control service passes None.
    """
    # Late: a node imports only its own backend (openstacksdk is heavy, and
    # a loopback cluster never needs it).
    if name == "loopback":
        from blockmover.backends.loopback import LoopbackBlockDeviceAPI
        return LoopbackBlockDeviceAPI.from_options(
            options, cluster_name, instance_id)
    if name == "openstack":
        from blockmover.backends.openstack import OpenStackBlockDeviceAPI
        return OpenStackBlockDeviceAPI.from_options(
            options, cluster_name, instance_id)
    raise UnknownBackend("unknown backend %r: use one of %s"
                         % (name, ", ".join(BACKENDS)))
