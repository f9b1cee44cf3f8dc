"""
The compute side of the emulated Nova: each server's power and the
``nova-compute`` service of each compute host, as Nova keeps them::

    stop    ACTIVE or ERROR  --(task powering-off)-->  SHUTOFF
    start   SHUTOFF          --(task powering-on)--->  ACTIVE

A transition takes the configured time (``latency: {stop, start}``) and
happens only while the server's compute service is up: a stop or start
sent to a host whose service is down stays in its task state (Nova's API
accepts it, the service never acts on it) and completes when the service
comes back, as a restarted ``nova-compute`` finishes the stops and starts
it finds under way. A failed one (``power_errors`` fault, or a power
command that fails) changes no power and clears the task state, leaving
the status it had (Nova reverts a failed stop).

The server's owner is told before Nova would say so: the config's
``power_command`` runs with ``off`` or ``on``, the server's name and id,
and only once it exits 0 does the status change, so a SHUTOFF a client
reads means the command has powered the node off.

A compute service is down when it is forced down (through the admin
API), as an operator marks a failed host in Nova; each server has a host
of its own unless the config shares one.

Records live in the store (``Store.servers``, ``Store.services``), so a
restart keeps them and ``resume`` restarts transitions caught mid-way.
"""

import datetime

from eliot import log_message
from twisted.internet.defer import succeed
from twisted.internet.threads import deferToThread

from blockmover.command import run

# Nova's power_state values (nova.compute.power_state).
RUNNING = 1
SHUTDOWN = 4

# Nova's status for each vm_state the emulator uses (a task under way does
# not change it: a server powering off is still ACTIVE).
STATUS = {"active": "ACTIVE", "stopped": "SHUTOFF", "error": "ERROR"}

# The task state of each transition, and where it ends.
TASKS = {"stop": "powering-off", "start": "powering-on"}
_ENDS = {"stop": ("stopped", SHUTDOWN), "start": ("active", RUNNING)}
_WORDS = {"stop": "off", "start": "on"}

# Nova's shutdown_timeout: what a clean power-off may take; a power
# command is given as long.
POWER_COMMAND_TIMEOUT = 60.0

# The states os-resetState accepts.
RESET_STATES = ("active", "error")


def nova_time(clock):
    """
    A Nova timestamp (UTC, seconds, ``Z``) for ``clock``'s now.
    """
    moment = datetime.datetime.fromtimestamp(clock.seconds(),
                                             datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Compute(object):
    """
    Servers' power and compute services over ``store``, for the config's
    servers (``config.servers``, ``config.hosts``).

    :param run_in_thread: how blocking work (the power command) runs off
        the reactor; ``deferToThread`` unless a test says otherwise.
    """

    def __init__(self, reactor, config, store, faults, run_in_thread=None):
        self.reactor = reactor
        self.config = config
        self.store = store
        self.faults = faults
        self._thread = run_in_thread or deferToThread
        # Servers whose power is changing now: a repeated step (a service
        # forced up twice) must not power them twice.
        self._changing = set()

    # --- reading -----------------------------------------------------------

    def server(self, server_id):
        """
        The power record of ``server_id`` (a configured server): its
        ``vm_state``, ``task_state``, ``power_state`` and ``updated``;
        a server never changed is active and running.
        """
        return self.store.servers.setdefault(server_id, {
            "vm_state": "active", "task_state": None,
            "power_state": RUNNING, "updated": None})

    def status(self, server_id):
        return STATUS[self.server(server_id)["vm_state"]]

    def host(self, server_id):
        return self.config.hosts[server_id]

    def hosts(self):
        return sorted(set(self.config.hosts.values()))

    def host_is_up(self, host):
        return not self.store.services.get(host, {}).get("forced_down")

    def service_up(self, server_id):
        """
        Whether the compute service of the server's host is up.
        """
        return self.host_is_up(self.host(server_id))

    def describe(self, server_id):
        """
        The server as the admin API lists it.
        """
        record = self.server(server_id)
        return {"id": server_id, "name": self.config.servers[server_id],
                "host": self.host(server_id),
                "status": self.status(server_id),
                "vm_state": record["vm_state"],
                "task_state": record["task_state"],
                "power_state": record["power_state"],
                "compute_service": "up" if self.service_up(server_id)
                else "down"}

    def describe_service(self, host):
        return {"host": host, "binary": "nova-compute",
                "state": "up" if self.host_is_up(host) else "down",
                "forced_down": not self.host_is_up(host),
                "servers": sorted(self.config.servers[sid]
                                  for sid, h in self.config.hosts.items()
                                  if h == host)}

    # --- changing ----------------------------------------------------------

    def _changed(self, record, **changes):
        record.update(changes)
        record["updated"] = nova_time(self.reactor)

    def begin(self, server_id, operation):
        """
        Start ``operation`` (``stop`` or ``start``) of the server, whose
        state the caller checked: its task state is set now, the rest
        follows. Returns a Deferred firing once the task state is saved.
        """
        self._changed(self.server(server_id), task_state=TASKS[operation])
        log_message(message_type="blockmover:emulator:server-task",
                    server=server_id, task_state=TASKS[operation])
        self._schedule(server_id, operation)
        return self.store.save()

    def _schedule(self, server_id, operation):
        delay = (self.config.latency[operation]
                 + self.faults.stuck(operation, {}, server_id))
        self.reactor.callLater(delay, self._finish, server_id, operation)

    def _finish(self, server_id, operation):
        record = self.server(server_id)
        if record["task_state"] != TASKS[operation]:
            # Outdated: reset, or finished by a resumed step.
            return None
        if not self.service_up(server_id):
            # The compute service never acts on it; it will once it is up.
            log_message(message_type="blockmover:emulator:server-waits",
                        server=server_id, host=self.host(server_id),
                        task_state=record["task_state"])
            return None
        if server_id in self._changing:
            return None
        if self.faults.power_fails(operation, server_id):
            log_message(message_type="blockmover:emulator:injected-fault",
                        server=server_id, fault="power_error",
                        operation=operation)
            return self._failed(None, server_id, operation)
        self._changing.add(server_id)
        d = self._tell_owner(server_id, operation)
        d.addCallbacks(self._powered, self._failed,
                       callbackArgs=(server_id, operation),
                       errbackArgs=(server_id, operation))

        def done(result):
            self._changing.discard(server_id)
            return result
        d.addBoth(done)
        return d

    def _tell_owner(self, server_id, operation):
        command = self.config.power_command
        if command is None:
            return succeed(None)
        argv = command + [_WORDS[operation], self.config.servers[server_id],
                          server_id]
        return self._thread(run, argv, timeout=POWER_COMMAND_TIMEOUT)

    def _powered(self, _, server_id, operation):
        record = self.server(server_id)
        vm_state, power_state = _ENDS[operation]
        if record["task_state"] == TASKS[operation]:
            self._changed(record, vm_state=vm_state, task_state=None,
                          power_state=power_state)
        else:
            # Reset while the power changed: the power did change.
            self._changed(record, power_state=power_state)
        log_message(message_type="blockmover:emulator:server-status",
                    server=server_id, status=self.status(server_id),
                    power_state=power_state)
        return self.store.save()

    def _failed(self, failure, server_id, operation):
        if failure is not None:
            log_message(message_type="blockmover:emulator:power-failed",
                        server=server_id, operation=operation,
                        error=failure.getErrorMessage())
        record = self.server(server_id)
        if record["task_state"] == TASKS[operation]:
            self._changed(record, task_state=None)
        return self.store.save()

    def reset_state(self, server_id, state):
        """
        Nova's ``os-resetState``: set the server's vm_state (``active`` or
        ``error``) and clear its task state; its power stays as it is, so
        an ERROR server may still be running, as on a real cloud.
        """
        self._changed(self.server(server_id), vm_state=state,
                      task_state=None)
        log_message(message_type="blockmover:emulator:server-status",
                    server=server_id, status=self.status(server_id))
        return self.store.save()

    def force_down(self, host, forced_down):
        """
        Mark the compute service of ``host`` down (or up again, when the
        stops and starts sent to it meanwhile resume).
        """
        self.store.services[host] = {"forced_down": bool(forced_down)}
        log_message(message_type="blockmover:emulator:compute-service",
                    host=host, state="down" if forced_down else "up")
        if not forced_down:
            self._resume(lambda server_id: self.host(server_id) == host)
        return self.store.save()

    def _resume(self, wanted):
        for server_id in self.config.servers:
            task = self.server(server_id)["task_state"]
            for operation, task_state in TASKS.items():
                if task == task_state and wanted(server_id):
                    self._schedule(server_id, operation)

    def resume(self):
        """
        After a restart: carry on with the stops and starts under way.
        """
        self._resume(lambda server_id: True)
