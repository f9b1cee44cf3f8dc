"""
Keeping secrets out of what the control service shows: a configuration
handed back over HTTP has every application's ``secrets`` and every
secret-looking value replaced.
"""

from blockmover.config import is_secrets
from blockmover.model import REDACTED
from blockmover.yamlsource import Source, looks_secret

__all__ = ["REDACTED", "looks_secret", "scrub_yaml", "scrub_app_yml"]


def scrub_yaml(text, path="<text>", secret=None):
    """
    ``text`` (YAML that loaded before) with the value of every key that
    looks like a password, secret or token (``looks_secret``: wherever the
    key is, everything under it) redacted, and of every key whose
    path ``secret`` accepts (see ``Source.redacted``): scalars become
    ``'<redacted>'``, mappings and lists keep their keys with every value
    ``<redacted>``, comments inside them go. Everything else is unchanged,
    and the result is still YAML that ``Source`` reads. Blocks on a large
    text: run it where the configuration is read, off the reactor.

    :raise ConfigError: ``text`` is not YAML ``Source`` reads.
    """
    def redact(key):
        return looks_secret(key) or (secret is not None and secret(key))
    return Source(text, path).redacted(redact, REDACTED)


def scrub_app_yml(text, path="app.yml"):
    """
    ``scrub_yaml`` of an ``app.yml``: its applications' ``secrets`` (names
    kept, values redacted) whatever their names, and any secret-looking
    value.
    """
    return scrub_yaml(text, path, is_secrets)
