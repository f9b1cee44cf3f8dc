"""
The error replies of the emulated services, in the shapes the real ones
use: ``{"<faultName>": {"code", "message"}}`` for Cinder and Nova,
``{"error": {"code", "title", "message"}}`` for Keystone.
"""

FAULT_NAMES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    409: "conflictingRequest",
    413: "overLimit",
    503: "serviceUnavailable",
}


class ApiError(Exception):
    """
    A request the emulated service refuses, with its HTTP ``code`` and the
    ``message`` the real service would send.
    """

    def __init__(self, code, message, retry_after=None, headers=None):
        Exception.__init__(self, message)
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.headers = dict(headers or {})
        if code == 413:
            self.headers.setdefault("Retry-After", str(retry_after or 0))

    def body(self):
        fault = {"code": self.code, "message": self.message}
        if self.code == 413:
            fault["retryAfter"] = str(self.retry_after or 0)
        return {FAULT_NAMES.get(self.code, "computeFault"): fault}


class KeystoneError(ApiError):
    """
    An error from the identity service, in Keystone's own shape.
    """

    TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
              404: "Not Found"}

    def body(self):
        return {"error": {"code": self.code,
                          "title": self.TITLES.get(self.code, "Error"),
                          "message": self.message}}


def not_found(message):
    return ApiError(404, message)


def bad_request(message):
    return ApiError(400, message)
