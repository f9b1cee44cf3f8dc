"""
What Cinder refuses in the requests blockmover sends, as Cinder 29.0.0
words it (its JSON schemas, cinder/api/schemas, checked with jsonschema):
volume names and descriptions, metadata, the keys of a create or an
update, list filters and sort keys. Pure: the openstack backend checks a
request here before sending it, and the OpenStack emulator refuses with
the same rules, so a mistake shows on the node and on the emulator before
it shows on a real cloud.

Every check raises ``Refused`` naming the field, with the message Cinder
would answer with its 400.
"""

import re

# Cinder's database columns (and its schemas) hold 255 characters.
MAX_LENGTH = 255

# Metadata keys, as Cinder's parameter_types.extra_specs matches them
# (with re.search, as jsonschema does).
METADATA_KEY_PATTERN = "^[a-zA-Z0-9-_:. ]{1,255}$"

# The keys a volume create may carry inside "volume" (from microversion
# 3.53 no others: blockmover asks for 3.71), and around it.
CREATE_KEYS = ("name", "description", "display_name", "display_description",
               "volume_type", "metadata", "snapshot_id", "source_volid",
               "consistencygroup_id", "size", "availability_zone",
               "multiattach", "image_id", "imageRef", "group_id",
               "backup_id")
CREATE_BODY_KEYS = ("volume", "OS-SCH-HNT:scheduler_hints")
# Unknown keys inside "volume" are refused from this microversion on.
STRICT_CREATE = (3, 53)
UPDATE_KEYS = ("name", "description", "display_name", "display_description",
               "metadata")

# The filters a project's user may list volumes by (Cinder's
# resource_filters.json), and the listing's own parameters.
LIST_FILTERS = ("name", "status", "metadata", "bootable",
                "availability_zone", "size", "created_at", "updated_at")
LIST_PARAMETERS = ("limit", "marker", "sort", "sort_key", "sort_dir",
                   "offset", "with_count")
# Columns a volume listing may be sorted by.
SORT_KEYS = ("id", "name", "size", "status", "created_at", "updated_at",
             "availability_zone", "bootable", "description", "user_id",
             "project_id", "volume_type_id")
SORT_DIRECTIONS = ("asc", "desc")


class Refused(ValueError):
    """
    A request Cinder refuses with a 400: ``field`` is what is wrong in it,
    ``message`` Cinder's answer.
    """

    def __init__(self, field, message):
        ValueError.__init__(self, message)
        self.field = field
        self.message = message


def _invalid(field, value, problem):
    # Cinder's words for a schema error at a field.
    return Refused(field, "Invalid input for field/attribute %s. Value: %s. "
                          "%s" % (field, value, problem))


def _unexpected(keys):
    keys = sorted(keys, key=str)
    return "Additional properties are not allowed (%s %s unexpected)" % (
        ", ".join(repr(k) for k in keys), "was" if len(keys) == 1 else "were")


def _not_of_type(value, *types):
    return "%r is not of type %s" % (value, ", ".join(repr(t) for t in types))


def check_text(field, value):
    """
    A name or description: a string (or None) of at most 255 characters
    once stripped of surrounding whitespace.
    """
    if value is None:
        return
    if not isinstance(value, str):
        raise _invalid(field, value, _not_of_type(value, "string", "null"))
    if len(value.strip()) > MAX_LENGTH:
        raise Refused(field, "Invalid input received: %s has %d characters, "
                             "more than %d." % (field, len(value.strip()),
                                                MAX_LENGTH))


def check_metadata(metadata, allow_null=False):
    """
    Volume metadata: an object whose keys match Cinder's pattern (letters,
    digits, ``-_:.`` and space, 1 to 255 of them) and whose values are
    strings of at most 255 characters.
    """
    if metadata is None and allow_null:
        return
    if not isinstance(metadata, dict):
        types = ("object", "null") if allow_null else ("object",)
        raise _invalid("metadata", metadata, _not_of_type(metadata, *types))
    bad = [k for k in metadata if not isinstance(k, str)
           or not re.search(METADATA_KEY_PATTERN, k)]
    if bad:
        raise _invalid("metadata", metadata, "%s %s not match any of the "
                       "regexes: %r" % (", ".join(repr(k) for k in sorted(
                           bad, key=str)), "does" if len(bad) == 1 else "do",
                           METADATA_KEY_PATTERN))
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise _invalid(key, value, _not_of_type(value, "string"))
        if len(value) > MAX_LENGTH:
            raise _invalid(key, value, "%r is too long" % (value,))


def _check_object(field, value, allowed):
    # ``allowed`` None: any key.
    if not isinstance(value, dict):
        raise _invalid(field, value, _not_of_type(value, "object"))
    unknown = set(value) - set(value if allowed is None else allowed)
    if unknown:
        raise _invalid(field, value, _unexpected(unknown))


def _check_body(body, allowed, required):
    if not isinstance(body, dict):
        raise Refused("body", _not_of_type(body, "object"))
    unknown = set(body) - set(allowed)
    if unknown:
        raise Refused(sorted(unknown, key=str)[0], _unexpected(unknown))
    if required not in body:
        raise Refused(required, "%r is a required property" % (required,))


def check_create(body, microversion=(3, 71)):
    """
    The body of ``POST /volumes``: ``{"volume": {...}}`` with only the
    keys Cinder knows (inside ``volume`` from microversion 3.53 on), a
    name and description Cinder takes, and metadata as ``check_metadata``.
    """
    _check_body(body, CREATE_BODY_KEYS, "volume")
    volume = body["volume"]
    _check_object("volume", volume,
                  CREATE_KEYS if microversion >= STRICT_CREATE else None)
    for field in ("name", "description", "display_name",
                  "display_description"):
        check_text(field, volume.get(field))
    check_metadata(volume.get("metadata"), allow_null=True)


def check_update(body):
    """
    The body of ``PUT /volumes/{id}``: a new name, description or
    metadata, nothing else.
    """
    _check_body(body, ("volume",), "volume")
    volume = body["volume"]
    _check_object("volume", volume, UPDATE_KEYS)
    for field in ("name", "description", "display_name",
                  "display_description"):
        check_text(field, volume.get(field))
    if "metadata" in volume:
        check_metadata(volume["metadata"])


def check_metadata_body(body):
    """
    The body of ``POST`` or ``PUT /volumes/{id}/metadata``:
    ``{"metadata": {...}}``.
    """
    _check_body(body, ("metadata",), "metadata")
    check_metadata(body["metadata"])


def check_list_query(names):
    """
    The query parameters of a volume listing, by name: filters a user may
    use and the listing's own.
    """
    unknown = [n for n in names
               if n not in LIST_FILTERS and n not in LIST_PARAMETERS]
    if unknown:
        raise Refused(unknown[0], "Invalid filters %s are found in query "
                                  "options." % (",".join(unknown),))


def sort_order(sort=None, sort_key=None, sort_dir=None):
    """
    The listing's order as [(key, direction)] from ``sort``
    (``key[:dir],...``) or ``sort_key`` and ``sort_dir``; empty when none
    is asked for (Cinder's default, newest first).
    """
    if sort:
        order = []
        for part in sort.split(","):
            key, _, direction = part.strip().partition(":")
            order.append((key, direction or "asc"))
    elif sort_key:
        keys = sort_key.split(",")
        directions = (sort_dir or "desc").split(",")
        order = [(key, directions[min(i, len(directions) - 1)])
                 for i, key in enumerate(keys)]
    else:
        return []
    for key, direction in order:
        if key not in SORT_KEYS:
            raise Refused("sort", "Invalid input received: Invalid sort key")
        if direction not in SORT_DIRECTIONS:
            raise Refused("sort", "Invalid input received: Unknown sort "
                                  "direction, must be 'desc' or 'asc'")
    return order
