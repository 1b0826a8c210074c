"""Turn dashboard form fields into the values the API's marshmallow schemas validate.

HTML forms send strings; the API's schemas are strict about JSON types (integers, booleans).
Converting here and validating with the very same schemas keeps one set of rules for both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from marshmallow import Schema, ValidationError

from coordinator.exceptions import CoordinatorError

_INTEGER = re.compile(r"-?[0-9]{1,18}")


def integer(value: str) -> int | str:
    """Return ``value`` as an int when it is one; else unchanged, for the schema to refuse."""
    value = value.strip()
    return int(value) if _INTEGER.fullmatch(value) else value


def pick(form: Mapping[str, str], names: Iterable[str], *, integers: Iterable[str] = (),
         optional: Iterable[str] = ()) -> dict[str, Any]:
    """Return the named fields; ``integers`` converted, ``optional`` ones dropped when empty."""
    integers, optional = set(integers), set(optional)
    values: dict[str, Any] = {}
    for name in names:
        if name not in form:
            continue
        value = form[name]
        if name in optional and not value.strip():
            continue
        values[name] = integer(value) if name in integers else value
    return values


def load(schema: Schema, values: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict]:
    """Validate ``values``; return ``(data, {})`` or ``(None, {field: [messages]})``."""
    try:
        return schema.load(values), {}
    except ValidationError as error:
        return None, {name: messages if isinstance(messages, list) else [str(messages)]
                      for name, messages in error.normalized_messages().items()}


def field_errors(error: CoordinatorError) -> dict[str, list[str]]:
    """Return a domain error's per-field messages (``{"json": {...}}`` or ``{"query": ...}``)."""
    found: dict[str, list[str]] = {}
    for location in (error.errors or {}).values():
        if isinstance(location, Mapping):
            for name, messages in location.items():
                found[name] = messages if isinstance(messages, list) else [str(messages)]
    return found
