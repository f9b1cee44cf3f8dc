"""
The cloud backend of a node that holds no cloud credentials: every call
that changes the cloud (create, attach, detach, grow, mark formatted) is
asked of the control service (``blockmover.control.nodecalls``), which
checks it against this node's slice and makes it with the cluster's
credentials. The node finds its devices itself, by the volume's identity
in its by-id directory (``blockmover.backends.devices``), and learns its
server id from its configuration or the metadata service, as the openstack
backend does.

The agent runs backend calls in its thread pool; each call here waits, in
that thread, for the control service's answer on the reactor.
"""

import os
import threading

from eliot import log_message
from twisted.internet.defer import maybeDeferred
from twisted.internet.threads import blockingCallFromThread
from twisted.python.failure import Failure
from zope.interface import implementer

from blockmover import identity
from blockmover.backends import instance
from blockmover.backends.deviceevents import DeviceEvents
from blockmover.backends.devices import BY_ID, find_cloud_device, link_names
from blockmover.backends.interface import (
    BackendUnavailable, BlockDeviceError, IBlockDeviceAPI, NoInstanceId,
)
from blockmover.client import ControlError, ControlUnreachable
from blockmover.model import Volume, from_data
from blockmover.units import GiB

# How long a call may wait for the control service: an attach waits for the
# cloud (its deadline is the control service's backend's, 300 s by default).
CALL_TIMEOUT = 600.0
# Seconds between two looks at whether the call ended, while watching.
_LOOK = 0.2
# Times at most one call tells the service of its device.
_MAX_TELLS = 3


@implementer(IBlockDeviceAPI)
class RelayedBlockDeviceAPI(object):
    """
    Volumes of node ``node`` through the control service's ``client`` (a
    ``ControlClient`` on ``reactor``, presenting this node's certificate).

    :param instance_id: this node's server id, or None to ask the metadata
        service (or config drive) on first use.
    :param device_root: the node's by-id directory.
    """

    def __init__(self, client, reactor, node, instance_id=None,
                 device_root=BY_ID, metadata_url=instance.METADATA_URL,
                 config_drive=instance.CONFIG_DRIVE):
        self._client = client
        self._reactor = reactor
        self._node = node
        self._instance_id = instance_id
        self._device_root = device_root
        self._metadata_url = metadata_url
        self._config_drive = config_drive

    def _ask(self, function, *args, **kwargs):
        """
        ``function(*args, **kwargs)`` (a ``ControlClient`` call) on the
        reactor, its answer a ``Volume``; the service's refusal is a
        ``BlockDeviceError`` saying why.
        """
        try:
            data = blockingCallFromThread(self._reactor, function, *args,
                                          **kwargs)
        except (ControlUnreachable, ControlError) as e:
            self._raise(e)
        return from_data(Volume, data)

    @staticmethod
    def _raise(error):
        """
        Raise what ``error`` (a client's failure) means to the agent: the
        service unreachable is the backend unavailable; its refusal a
        ``BlockDeviceError`` saying why.
        """
        if isinstance(error, ControlUnreachable):
            raise BackendUnavailable(str(error))
        if isinstance(error, ControlError):
            raise BlockDeviceError("the control service refused: %s"
                                   % ("; ".join(error.messages),))
        raise error

    def _call(self, call, **body):
        return self._ask(self._client.node_volume_call, self._node, call,
                         CALL_TIMEOUT, **body)

    # --- IBlockDeviceAPI -------------------------------------------------

    def allocation_unit(self):
        return GiB

    def compute_instance_id(self):
        if self._instance_id is None:
            self._instance_id = instance.discover(self._metadata_url,
                                                  self._config_drive)
        return self._instance_id

    def create_volume(self, dataset_id, size, metadata):
        # The service sizes and stamps it from this node's slice: ``size``
        # and ``metadata`` are what the slice says too.
        return self._call("create", dataset_id=dataset_id)

    def get_volume(self, volume_id):
        return self._ask(self._client.node_volume, self._node, volume_id)

    def list_volumes(self):
        raise BlockDeviceError(
            "a node without cloud credentials does not list the cloud; its "
            "slice carries the volumes that matter to it")

    def set_metadata(self, volume_id, metadata):
        if dict(metadata) != {identity.FORMAT_KEY: identity.FORMATTED}:
            raise BlockDeviceError(
                "a node without cloud credentials may only mark its volumes "
                "formatted, not set %r" % (sorted(metadata),))
        self._call("formatted", volume_id=volume_id)

    def attach_volume(self, volume_id, attach_to):
        self._only_here(attach_to, "attach")
        return self._watched_call("attach", volume_id, present=True)

    def detach_volume(self, volume_id, detach_from):
        self._only_here(detach_from, "detach")
        return self._watched_call("detach", volume_id, present=False)

    def _watched_call(self, call, volume_id, present):
        """
        Ask for ``call`` of ``volume_id`` and, while the service waits for
        the cloud, watch this node's by-id directory: when the volume's
        device is there (``present``) or gone (not ``present``), say so to
        the service, whose wait then looks at the cloud again at once (it
        cannot see this node's devices, and would otherwise notice only at
        its next pause).
        """
        done = threading.Event()
        outcome = []
        # Written when the answer comes, so the watch ends at once.
        answered, answer = os.pipe()

        def start():
            d = maybeDeferred(self._client.node_volume_call, self._node,
                              call, CALL_TIMEOUT, volume_id=volume_id)

            def finished(result):
                outcome.append(result)
                done.set()
                os.write(answer, b"!")
            d.addBoth(finished)
        try:
            events = DeviceEvents(self._device_root,
                                  link_names(volume_id)).__enter__()
        except OSError as e:
            log_message(message_type="blockmover:relayed:no-device-events",
                        directory=self._device_root, error=str(e))
            events = None
        told = 0
        try:
            self._reactor.callFromThread(start)
            while not done.is_set():
                if events is None:
                    done.wait()
                    break
                changed = events.wait(_LOOK, interrupt=answered)
                if (changed and told < _MAX_TELLS
                        and self._linked(volume_id) == present):
                    told += 1
                    self._reactor.callFromThread(self._tell, volume_id)
        finally:
            if events is not None:
                events.__exit__(None, None, None)
        done.wait()
        os.close(answered)
        os.close(answer)
        [result] = outcome
        if isinstance(result, Failure):
            self._raise(result.value)
        return from_data(Volume, result)

    def _linked(self, volume_id):
        return any(os.path.lexists(os.path.join(self._device_root, name))
                   for name in link_names(volume_id))

    def _tell(self, volume_id):
        """
        On the reactor: tell the service this node saw the device change.
        Only a hint: a failure is logged, and the service's wait ends at
        its next look anyway.
        """
        d = self._client.node_seen(self._node, volume_id)
        d.addErrback(lambda failure: log_message(
            message_type="blockmover:relayed:seen-not-told",
            volume_id=volume_id, reason=failure.getErrorMessage()))

    def destroy_volume(self, volume_id):
        raise BlockDeviceError("a node without cloud credentials does not "
                               "destroy volumes")

    def grow_volume(self, volume_id, size):
        return self._call("grow", volume_id=volume_id, size=size)

    def get_device_path(self, volume_id):
        return find_cloud_device(volume_id, by_id=self._device_root)

    def _only_here(self, instance_id, what):
        try:
            here = self.compute_instance_id()
        except NoInstanceId:
            here = None
        if instance_id != here:
            raise BlockDeviceError(
                "a node without cloud credentials may %s volumes only on "
                "itself (%s), not on %s" % (what, here, instance_id))
