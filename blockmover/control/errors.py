"""
Errors of the control service a user can meet, each saying what to do.
"""


class StoreError(Exception):
    """
    The stored configuration cannot be read, or a new one cannot be saved.
    """


class BackendError(Exception):
    """
    The configured backend cannot be made or reached.
    """
