"""JSON bodies (a request, the C ABI's options, the service config): one object of known, typed fields.

Its users: :meth:`runtime.requests.SampleRequest.from_json` (HTTP and C ABI requests),
:class:`runtime.host.HostOptions` (the C ABI's options) and ``serve.config.ServiceConfig``.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import InputError, brief

NUMBER = (int, float)
KNOWN_LIST_CHARS = 160  # an unknown field's message lists the known ones up to this length
MAX_JSON_DEPTH = 16  # nesting of arrays and objects; a request needs 2 (conditioning embeddings: 4)
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string, escapes included (unrolled: linear, fast)
_OPEN, _CLOSE = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)


def json_depth(text: str | bytes) -> int:
    """How deep arrays and objects nest in JSON text (strings skipped), without parsing it: linear time, in C."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    codes = np.frombuffer(_JSON_STRING.sub(b'""', raw), np.uint8)
    steps = np.isin(codes, _OPEN).astype(np.int64) - np.isin(codes, _CLOSE)
    return int(np.cumsum(steps).max(initial=0))


def parse_object(text: str | bytes, what: str, schema: Mapping[str, type | tuple]) -> dict[str, Any]:
    """A JSON object whose fields are all in ``schema`` (name → accepted types; bool only where listed).
    Empty text is an empty object. Raises InputError with one line."""
    if json_depth(text) > MAX_JSON_DEPTH:
        raise InputError(f"{what} nests arrays or objects deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(text) if text.strip() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" ({exc.msg} at line {exc.lineno} column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise InputError(f"{what} is not valid JSON{where}") from None
    if not isinstance(data, dict):
        raise InputError(f"{what} must be a JSON object, got {type(data).__name__}")
    return check_object(data, what, schema)


def check_object(data: dict[str, Any], what: str, schema: Mapping[str, type | tuple]) -> dict[str, Any]:
    """``data`` if its fields are all in ``schema`` with accepted types; InputError with one line otherwise."""
    unknown = sorted(set(data) - set(schema))
    if unknown:
        known = ", ".join(schema)
        if len(known) > KNOWN_LIST_CHARS:  # a long list would bury the message: the closest names, and how many
            close = sorted({m for name in unknown for m in difflib.get_close_matches(name, list(schema), n=3)})
            known = f"{', '.join(close)} ({len(schema)} fields in all)" if close else f"{len(schema)} fields, none close"
        given = ", ".join(u if len(u) <= 40 else u[:40] + "..." for u in unknown[:5])
        raise InputError(f"{what} has unknown field(s) {given}; known: {known}")
    for key, value in data.items():
        kinds = schema[key] if isinstance(schema[key], tuple) else (schema[key],)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise InputError(f"{what} field {key!r} has the wrong type ({brief(value)})")
    return data
