"""
One region of the emulated cloud: its Cinder and Nova (under the region's
path, see ``keystone.region_prefix``), the servers the config puts in it,
the volumes of its part of the store, and its own faults, counters and
admin API. Regions share only Keystone and the files' directories (ids are
unique across regions).
"""

from blockmover.emulator import admin as admin_api
from blockmover.emulator import cinder as cinder_api
from blockmover.emulator import nova as nova_api
from blockmover.emulator.compute import Compute
from blockmover.emulator.faults import Faults
from blockmover.emulator.keystone import region_prefix
from blockmover.emulator.lifecycle import Lifecycle


class Region(object):
    """
    The region ``name`` of ``config`` over ``store`` (a ``Store``).
    Attributes: ``name``, ``config`` (the config as the region sees it),
    ``store`` (its ``RegionStore``), ``faults``, ``counters``,
    ``lifecycle``, ``compute``, ``admin``.
    """

    def __init__(self, reactor, config, store, name):
        self.name = name
        self.config = config.in_region(name)
        self.store = store.region(name)
        # The config's faults hold in every region, each counting its own.
        self.faults = Faults(config.faults, servers=self.config.servers)
        self.counters = admin_api.Counters()
        self.lifecycle = Lifecycle(reactor, self.store, config.latency,
                                   self.faults)
        self.compute = Compute(reactor, self.config, self.store, self.faults)
        prefix = region_prefix(config, name)
        self.cinder = cinder_api.Cinder(self.config, self.store,
                                        self.lifecycle, reactor, prefix)
        self.nova = nova_api.Nova(self.config, self.store, self.lifecycle,
                                  self.compute, reactor, prefix)
        self.admin = admin_api.Admin(self.config, self.store, self.faults,
                                     self.counters, self.compute)

    def add_routes(self, router, first):
        """
        Its Cinder, Nova and admin API; the first region's admin API is
        also at ``/admin`` itself.
        """
        nova_api.add_routes(router, self.nova, region=self)
        admin_api.add_routes(router, self.admin,
                             admin_api.region_path(self.name))
        if first:
            admin_api.add_routes(router, self.admin)
        cinder_api.add_routes(router, self.cinder, region=self)

    def start(self):
        self.lifecycle.resume()
        self.compute.resume()
