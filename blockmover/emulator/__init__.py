"""
``blockmover-cloud``: an OpenStack emulator speaking the real Keystone v3,
Cinder v3 and Nova (``os-volume_attachments``, servers' ``os-stop`` and
``os-start``) wire protocol, with volumes that are sparse files and
attachments that are loop devices, so the real openstacksdk (and the
``openstack`` backend) can be tested without a cloud.

URL layout on one listening port::

    /identity/v3/...        Keystone (auth_url is /identity)
    /v3[/{project}]/...     Cinder (catalog types block-storage and volumev3)
    /compute/v2.1/...       Nova
    /admin/...              faults, counters, volumes, servers, compute
                            services (see admin.py)
"""
