"""
Simulated agents for ``benchmarks/scale.py``: in one process, many nodes'
long polls of their slice over real HTTPS with each node's own client
certificate, from each node's own address on the loopback network (so the
service's limits count them as the clients they are). They poll as
``agents.loop`` does: the slice after the generation held, for 30 seconds
at a time, on one persistent connection, giving up on an answer 15 s late
(as ``ControlClient`` does); after a failure they wait as it does (0.1 s
growing by 1.5 to 30 s) and connect again.

Given the ports of several replicas of the service, each agent asks its
own first (``FIRST``, an index in ``ports``) and, as ``ControlClient``
does, the next one at once when that one cannot be reached, gives no
answer in time or knows no leader (503 naming none); it waits only once
it went round them all.

    python benchmarks/scale_agents.py PLAN.json

``PLAN.json``: ``{"ports": [P, ...], "ca": PATH, "timeout": S, "agents":
[[NODE, SOURCE ADDRESS, CERTIFICATE, KEY, FIRST], ...]}`` (``"port": P``
for one port; ``FIRST`` may be left out: 0). Each slice received is a line
``R NODE GENERATION TIME PORT`` on stdout, each refusal ``X NODE STATUS``;
runs until it is signalled.
"""

import asyncio
import json
import signal
import ssl
import sys
import time

# agents.loop's recheck backoff: what a real agent waits after a failure.
INITIAL, FACTOR, MAXIMUM = 0.1, 1.5, 30.0
# The control service's limits answer 429 and 503 with this.
RETRY_AFTER = 5.0
# As ``ControlClient``: how much longer than the poll's own timeout an
# answer may take before the replica counts as unreachable.
LONG_POLL_MARGIN = 15.0


class Unserved(Exception):
    """
    The replica answered that it knows no leader: the next one is asked.
    """


class Output(object):
    """
    Lines for the benchmark, written out every few milliseconds rather
    than one write each.
    """

    def __init__(self):
        self._lines = []

    def line(self, text):
        self._lines.append(text)

    async def flush_forever(self):
        while True:
            await asyncio.sleep(0.01)
            self.flush()

    def flush(self):
        if self._lines:
            lines, self._lines = self._lines, []
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()


async def _response(reader):
    """
    ``(status, body)`` of one HTTP/1.1 response.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return status, body


def no_leader(status, body):
    """
    Whether an answer says the replica knows no leader (503 naming none),
    not that it is busy (the service's limits' 503).
    """
    if status != 503:
        return False
    try:
        return json.loads(body).get("leader", False) is None
    except (ValueError, AttributeError):
        return False


async def agent(node, source, context, ports, first, timeout, output):
    """
    One node's long polls, for ever, at ``ports[first]`` while it answers.
    """
    generation = None
    at = first
    # Replicas asked in a row without an answer, and rounds of them all.
    missed = 0
    failures = 0
    path = "/v1/nodes/%s/desired" % (node,)
    while True:
        writer = None
        port = ports[at]
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", port, ssl=context, local_addr=(source, 0),
                server_hostname="127.0.0.1"), LONG_POLL_MARGIN)
            while True:
                query = "timeout=%g" % (timeout,)
                if generation is not None:
                    query += "&after=%d" % (generation,)
                writer.write(b"GET %s?%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                             % (path.encode(), query.encode()))
                status, body = await asyncio.wait_for(
                    _response(reader), timeout + LONG_POLL_MARGIN)
                if status == 200:
                    missed = failures = 0
                    generation = json.loads(body)["generation"]
                    output.line("R %s %d %.6f %d" % (node, generation,
                                                     time.time(), port))
                elif status == 204:
                    missed = failures = 0
                elif no_leader(status, body):
                    output.line("X %s %d" % (node, status))
                    raise Unserved()
                else:
                    output.line("X %s %d" % (node, status))
                    await asyncio.sleep(RETRY_AFTER)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, asyncio.TimeoutError, Unserved,
                ValueError, IndexError):
            # As the agent's client: the next replica at once; once none
            # answered, wait as the agent does, then go round again.
            at = (at + 1) % len(ports)
            missed += 1
            if missed >= len(ports):
                missed = 0
                delay = min(MAXIMUM, INITIAL * FACTOR ** failures)
                failures += 1
                await asyncio.sleep(delay)
        finally:
            if writer is not None:
                writer.close()


def _context(ca, certificate, key):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca)
    context.load_cert_chain(certificate, key)
    return context


async def run(plan):
    output = Output()
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set_result, None)
    tasks = [asyncio.ensure_future(output.flush_forever())]
    ports = plan.get("ports") or [plan["port"]]
    for node, source, certificate, key, *first in plan["agents"]:
        tasks.append(asyncio.ensure_future(agent(
            node, source, _context(plan["ca"], certificate, key), ports,
            first[0] if first else 0, plan["timeout"], output)))
    await stopped
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    output.flush()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        plan = json.load(f)
    asyncio.run(run(plan))


if __name__ == "__main__":
    main()
