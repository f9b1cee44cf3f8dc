"""
Microversions: what a client asks for in ``OpenStack-API-Version`` (or
Nova's older ``X-OpenStack-Nova-API-Version``), checked against what the
emulated service supports, and echoed back.
"""

from blockmover.emulator.errors import ApiError

RANGES = {
    "volume": ((3, 0), (3, 71)),
    "compute": ((2, 1), (2, 104)),
}


def text(version):
    return "%d.%d" % version


def _parse(value, service):
    lo, hi = RANGES[service]
    if value == "latest":
        return hi
    try:
        major, minor = value.split(".")
        return int(major), int(minor)
    except ValueError:
        raise ApiError(400, "API Version String %s is of invalid format. "
                            "Must be of format MajorNum.MinorNum." % (value,))


def requested(headers, service):
    """
    The (major, minor) version the request asks of ``service``; the
    minimum when it asks for none.

    :raise ApiError: 400 for a malformed version, 406 for one outside the
        supported range.
    """
    lo, hi = RANGES[service]
    value = None
    for part in headers.get("openstack-api-version", "").split(","):
        words = part.split()
        if len(words) == 2 and words[0].lower() == service:
            value = words[1]
    if value is None and service == "compute":
        value = headers.get("x-openstack-nova-api-version")
    if value is None:
        return lo
    version = _parse(value.strip(), service)
    if not lo <= version <= hi:
        # Echoed like every other answer's version.
        raise ApiError(406, "Version %s is not supported by the API. "
                            "Minimum is %s and maximum is %s."
                       % (text(version), text(lo), text(hi)),
                       headers=echo_headers(service, version))
    return version


def echo_headers(service, version):
    """
    The headers that tell the client which version answered.
    """
    headers = {"OpenStack-API-Version": "%s %s" % (service, text(version)),
               "Vary": "OpenStack-API-Version"}
    if service == "compute":
        headers["X-OpenStack-Nova-API-Version"] = text(version)
        headers["Vary"] = "OpenStack-API-Version, X-OpenStack-Nova-API-Version"
    return headers
