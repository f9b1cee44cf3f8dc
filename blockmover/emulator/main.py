"""
``blockmover-cloud``: run the OpenStack emulator, print the clouds.yaml a
client needs, or clean up an emulator's state and loop devices.
"""

import argparse
import os
import sys

import yaml

from blockmover.emulator.config import ConfigError, load_config
from blockmover.emulator.keystone import PREFIX

DESCRIPTION = """\
An OpenStack emulator (Keystone v3, Cinder v3, Nova volume attachments,
server stop and start) whose volumes are sparse files under --state-dir
and whose attachments are loop devices backed by
<state-dir>/attachments/<server id>/<volume id>, a hard link of
<state-dir>/volumes/<volume id>. Each server sees its devices
as a cloud's guest does, by links <state-dir>/by-id/<server id>/virtio-<first
20 characters of the volume id>: give that directory to the openstack
backend on the node as its device_root. Needs root for losetup.

URLs: auth_url is http://HOST:PORT/identity; Cinder is /v3/<project id>,
Nova /compute/v2.1 (both in the token's catalog). With several regions
(regions: [RegionOne, RegionTwo]) the catalog lists Cinder and Nova once
per region: the first at those URLs, each other under /regions/<name>
(/regions/RegionTwo/v3/<project id>). Each region has its own volumes,
servers (a server's region: servers: {node3: {region: RegionTwo}}),
quotas, faults and counters; a volume attaches only to a server of its
own region. clouds-yaml --region writes the entry of one region.

The admin API under /admin (faults, counters, volumes, servers, compute services) answers
loopback clients only, or, when the config sets admin_token, requests
carrying it in X-Admin-Token. Through it a server is put in ERROR (POST
/admin/servers/<server>/reset-state {"state": "error"}) and a compute
service forced down (PUT /admin/services/<host or server> {"forced_down":
true}): Nova then refuses detaches from its servers with 409.

A server stopped with os-stop is powered off for its owner: GET
/admin/servers lists every server's power_state (1 running, 4 shut down),
and power_command, when set, runs with "off" or "on", the server's name
and its id before the status says SHUTOFF or ACTIVE.

The admin API of the first region is /admin; of any region,
/admin/regions/<name> (faults, counters, volumes, servers, services).

Several clouds are several emulators, each with its own --state-dir and
port: nothing else of one is shared with another.

The config (YAML, every key optional):
  region: RegionOne             # or regions: [RegionOne, RegionTwo]
  availability_zone: nova
  projects: {demo: {}}
  users: {demo: {password: demo-password, project: demo},
          operator: {password: ..., project: demo, admin: true}}
  servers: {node1: {}, node2: {id: <uuid>, host: compute-2,
                               region: RegionOne}}
  max_disk_devices: 14          # per server; default unlimited
  quotas: {volumes: 10, gigabytes: 1000, per_volume_gigabytes: -1}
  latency: {create: 0.2, attach: 2.0, detach: 2.0, extend: 0.5, delete: 0.2,
            stop: 2.0, start: 2.0}
  rpc_timeout: 60               # an attach to a down compute fails after it
  power_command: [/usr/local/bin/node-power, --cluster, demo]
  admin_token: <secret>
  faults: {errors: [...], over_limit: [...], latency: [...], stuck: [...],
           attach_errors: [...], power_errors: [...]}  # see PUT /admin/faults
"""


def _serve(args):
    # Late: only serving needs the reactor and the server; clouds-yaml and
    # cleanup stay quick and never install a reactor.
    from twisted.internet import endpoints, reactor

    from blockmover.emulator.server import Emulator
    from blockmover.emulator.store import URL_FILE
    from blockmover.files import write_atomically
    from blockmover.logs import start_logging

    config = load_config(args.config)
    if args.log:
        start_logging(args.log)
    emulator = Emulator(reactor, config, args.state_dir)
    emulator.start()
    endpoint = endpoints.serverFromString(reactor, args.listen)

    def listening(port):
        address = port.getHost()
        url = "http://%s:%d" % (address.host, address.port)
        # Lets a caller that asked for port 0 find the one it got.
        write_atomically(os.path.join(emulator.store.state_dir, URL_FILE),
                         url + "\n")
        sys.stderr.write("blockmover-cloud listening on %s\n" % (url,))
        sys.stderr.flush()

    def failed(failure):
        sys.stderr.write("blockmover-cloud: cannot listen on %s: %s\n"
                         % (args.listen, failure.getErrorMessage()))
        reactor.stop()
        return None

    endpoint.listen(emulator.site()).addCallbacks(listening, failed)
    reactor.addSystemEventTrigger("before", "shutdown", emulator.stop)
    reactor.run()
    return 0


def clouds_yaml(config, url, cloud, region=None):
    """
    The clouds.yaml text that points openstacksdk at the emulator at
    ``url`` as the config's first user, in ``region`` (None: the first) by
    default, listing every region.

    :raise ConfigError: the config has no such region.
    """
    if region is None:
        region = config.region
    elif region not in config.regions:
        raise ConfigError("%s: no region %r; the regions are %s"
                          % (config.source, region,
                             ", ".join(config.regions)))
    user, spec = next(iter(config.users.items()))
    entry = {
        "auth": {"auth_url": url.rstrip("/") + PREFIX,
                 "username": user, "password": spec["password"],
                 "project_name": spec["project"],
                 "user_domain_name": config.domain,
                 "project_domain_name": config.domain},
        "region_name": region,
        "identity_api_version": 3,
        "interface": "public",
    }
    if len(config.regions) > 1:
        # Every region, so that a client may also name another
        # (openstack.connect(region_name=...)).
        entry["regions"] = [region] + [r for r in config.regions
                                       if r != region]
    return yaml.safe_dump({"clouds": {cloud: entry}},
                          default_flow_style=False, sort_keys=False)


def _clouds_yaml(args):
    sys.stdout.write(clouds_yaml(load_config(args.config), args.url,
                                 args.cloud, args.region))
    return 0


def _cleanup(args):
    # Late, as in _serve: each subcommand imports only what it runs.
    from blockmover.backends import loopdevice
    from blockmover.emulator.store import remove_state

    state_dir = os.path.realpath(args.state_dir)
    if not os.path.isdir(state_dir):
        return 0
    # Every device backed by a file under the state directory: attachment
    # links, and volume files used directly by older state.
    for _device, backing in loopdevice.devices_under(state_dir):
        loopdevice.detach_all(backing)
    remove_state(state_dir)
    return 0


def parser():
    top = argparse.ArgumentParser(
        prog="blockmover-cloud", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", help="run the emulator until interrupted",
        description="Run the emulator until interrupted. " + DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--listen", default="tcp:8776:interface=127.0.0.1",
                       help="Twisted endpoint to listen on (port 0 picks a "
                            "free one; the URL is written to "
                            "<state-dir>/url)")
    serve.add_argument("--state-dir", required=True,
                       help="where volumes and state.json live")
    serve.add_argument("--config", help="emulator YAML config")
    serve.add_argument("--log", help="eliot log file (- for stdout)")
    serve.set_defaults(run=_serve)

    clouds = commands.add_parser(
        "clouds-yaml", help="print the clouds.yaml for a client")
    clouds.add_argument("--config", help="emulator YAML config")
    clouds.add_argument("--url", required=True,
                        help="the emulator's URL, e.g. http://127.0.0.1:8776")
    clouds.add_argument("--cloud", default="blockmover-cloud",
                        help="the cloud's name in clouds.yaml")
    clouds.add_argument("--region",
                        help="the region the entry uses (default: the "
                             "config's first)")
    clouds.set_defaults(run=_clouds_yaml)

    cleanup = commands.add_parser(
        "cleanup", help="detach an emulator's loop devices and remove its "
                        "state (stop the emulator first)")
    cleanup.add_argument("--state-dir", required=True)
    cleanup.set_defaults(run=_cleanup)
    return top


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as e:
        sys.stderr.write("blockmover-cloud: %s\n" % (e,))
        return 2


if __name__ == "__main__":
    sys.exit(main())
