"""
The control service: holds the cluster's desired configuration, keeps ONE
cached listing of each site's volumes, hands each node its slice of the
desired state, and leads pushes of volumes between sites.

REST API (JSON bodies, ``Content-Type: application/json``). Records travel
as ``blockmover.model.to_data`` makes them. Every request may carry the
header ``blockmover.logs.TASK_HEADER`` with an eliot task id; the service
continues that task so a deploy reads as one tree across processes.

``PUT /v1/configuration[?dry_run=1]``
    Body ``{"cluster_yml": TEXT, "app_yml": TEXT, "cluster_path": NAME,
    "app_path": NAME}`` (the two files' contents and the names to use in
    error messages). Validates as the CLI does, plus placement checks
    against the cached listing (limits, shrinks). 200 ``{"generation": N,
    "plan": {NODE: [LINE, ...]}}`` where ``plan`` says, per node, what will
    change; with ``dry_run`` nothing is stored and ``generation`` is the
    current one. 400 ``{"errors": [MESSAGE, ...]}`` and nothing changes:
    also for what ``README.rst`` lists as refused (YAML aliases, system
    mountpoints, loader environment variables) and for a new cluster name
    while the backend holds volumes of the current one. 413 for a body
    over 4 MiB; 503 (``Retry-After``) while four configurations are being
    read or applied already; 500 when the configuration cannot be saved
    (nothing changes, and no slice is handed out). The texts are read in
    a thread of their own: a large one never holds up other requests.

``GET /v1/configuration``
    200 ``{"generation": N, "cluster_yml": TEXT, "app_yml": TEXT,
    "cluster_path": NAME, "app_path": NAME}``; 404 ``{"errors": [...]}``
    before the first configuration. Never carries credentials: the value of
    every application's ``secrets`` (names kept) and of any key that looks
    like a password, secret or token reads ``'<redacted>'``.

``GET /v1/state``
    200 ``{"generation": N, "listed_at": T, "now": T, "cluster": NAME,
    "nodes": {NODE: {"reported_at": T | null, "state": NodeState | null,
    "progress": Progress | null, "generation": GEN | null, "address":
    ADDRESS | null, "transitioned_at": T | null}}, "applications": {APP:
    {"dataset_id": ID, "wanted_on": NODE | null, "running_on": [NODE, ...],
    "ready_on": [NODE, ...], "mounted_on": [NODE, ...], "attached_to":
    [NODE, ...], "transitioned_at": T | null}}, "unwanted_attachments":
    [{"volume_id": ID, "dataset_id": ID, "name": NAME | null,
    "attached_to": NODE}, ...]}``: an application is ready on a node once
    it serves there (its ready checks passed), not only runs.
    ``generation`` at the top is the configuration's; a node's
    ``generation`` is that of its current desired slice (null before the
    first listing), so a node has caught up when its ``progress`` is
    converged at that generation or later.
    Times ``T`` are seconds since the epoch; ``now`` is the service's
    clock when it answered. A node's ``address`` is the configuration's
    (null for a node it no longer names); its ``transitioned_at`` is when
    its reports last turned converged or not converged. An application's
    ``attached_to`` are the nodes the cached listing shows its volume
    attached to; its ``transitioned_at`` is when it was last wanted on
    another node, started or stopped on one, or became ready or not
    there. Both times are as this service saw them: after it restarts,
    they start again from when it first heard. ``unwanted_attachments``
    are the volumes of the cluster the listing shows attached to a node
    though no application of the configuration uses them.
    Node failure (``blockmover.control.failures``) adds, per node,
    ``"lease": {"renewed_at": T | null, "expires_at": T, "seconds": S}``,
    ``"failure": {"state": "live" | "unresponsive" | "fencing" | "fenced"
    | "confirmed-down" | "returning", "down_since": T | null,
    "returned_at": T | null, "fence":
    {...} | null, "confirmed_down": {"by": WHO, "at": T} | null,
    "removed": BOOL}`` and ``"release": [APP, ...]`` (what its slice tells
    it to give up); per application ``"placed_on": NODE | null`` (where it
    should run now: ``wanted_on`` unless it failed over), ``"failover":
    {"from": NODE, "to": NODE, "decided_at": T} | null`` and
    ``"failover_blocked": TEXT | null``; and at the top
    ``"stuck_detaches": [{"volume_id", "dataset_id", "application",
    "server", "node", "reason", "what_to_do", "attempts", "retry_at"}]``,
    the volumes the cloud refuses to detach from a node proven down. A
    node removed from the configuration that may still hold volumes is
    listed too. (``blockmover.status`` documents each field.)
    Sites and pushes (``blockmover.control.push_rules``) add ``"sites":
    {SITE: {"backend": NAME, "nodes": [NODE, ...], "volumes": N}}`` and
    ``"pushes": {APP: PushRecord + "source_progress"/"target_progress"}``,
    each progress a ``PushProgress`` its node last reported, or null.

``GET /v1/nodes/{node}/desired?after=GEN&timeout=SECONDS``
    A long poll for the node's ``NodeDesired``, the only answer carrying
    secrets (its applications' alone). Answers at once when the
    slice's ``generation`` is greater than ``after`` (or ``after`` is
    missing), else as soon as it changes, else after ``timeout`` seconds
    (default 30, at most 120, and at most a third of the cluster's lease:
    each poll renews the node's lease) with 204 and no body. 404 for a
    node the configuration does not name (a node it no longer names gets
    a slice releasing everything while it may hold volumes), and before
    the first configuration. 429
    (``Retry-After``) for a client address that holds 64 long polls already
    (``blockmover-control --max-polls-per-client``).
    Generations come from one counter and only grow, also across restarts
    of the service (which renumber every slice above any handed out
    before): the counter is saved before any slice of a new generation is
    handed out. No slice is handed out before the first good listing.

``PUT /v1/nodes/{node}/state``
    Body: a ``NodeReport``. 200 ``{}``. A report with ``changed_backend``
    set makes the service refresh its volume listing now. It renews the
    node's lease.

``POST /v1/nodes/{node}/fence`` and ``POST /v1/nodes/{node}/confirm-down``
    Body ``{}``; users only (``blockmover node``). ``fence`` starts a fence
    by the cluster's method unless one runs or the node is fenced already;
    ``confirm-down`` records that an operator knows the node is off, and
    is refused (409) while the node renews its lease. Both are saved with
    the user's identity and the time before they answer 200 ``{"node":
    NODE, "failure": {...}}`` (the node's ``failure`` as in ``GET
    /v1/state``); 404 for a node the configuration does not name.

``GET /v1/volumes``
    200 ``{"listed_at": T, "volumes": [Volume, ...], "refreshes": N,
    "error": MESSAGE | null}``: the cached listing (each volume with its
    site), how many listings of the backends the cache took (agents'
    requests never cause one), and why the last one failed (null when it
    succeeded).

``GET /v1/volumes/kept`` and ``DELETE /v1/volumes/{volume}``
    Users only (``blockmover volume``). The volumes kept that hold no
    application's data (the ones pushes left behind, or pushed into by a
    push that failed), ``{"listed_at": T, "volumes": [KEPT, ...]}``; and
    removing one through its site's backend, 200 ``{"removed": KEPT}``,
    409 for a volume that holds data, that a push under way uses or that
    is attached, 404 for an unknown one (``blockmover.control.kept``).

Errors are JSON ``{"errors": [MESSAGE, ...]}``: 400 for a malformed
request, 404 for an unknown path or node, 405 for a method a path does not
take, 409 for a node confirmed down that is not, 413 for a body over its bound (4 MiB for ``PUT /v1/configuration``,
256 KiB for any other), answered as soon as ``Content-Length`` says so,
before the body is read, 429 for too many long polls of one client, 500
when the service itself failed (the message or its log says why), 503 when
it holds as many connections as it takes (``--max-connections``, 16384)
or configurations as it reads at once. 429 and 503 carry ``Retry-After``.
See ``blockmover.control.limits``.
"""

# The port the control service listens on unless told otherwise.
DEFAULT_PORT = 4523
