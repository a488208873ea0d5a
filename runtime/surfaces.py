"""A request's surfaces, generated from its fields' declarations: the Python API's keywords, the CLI's flags,
JSON (a body, its schema) and Triton inputs.

Each request field declares (:func:`request_field`) what the surfaces need: its help text, the JSON types it
accepts, its CLI flag's parser (if any), its Triton input type and dims (if any), its aliases, its choices and
its JSON-schema limits. :class:`RequestSurfaces` turns those into every surface for a frozen dataclass of such
fields (:class:`runtime.requests.SampleRequest`), so adding a field is one declaration plus the code that acts
on it. The published schema is :data:`SCHEMA_FILE` (``tests/runtime/test_requests.py`` keeps it current).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import field, fields
from typing import Any

import numpy as np

from .errors import InputError, brief
from .json_body import parse_object

SCHEMA_FILE = "docs/request.schema.json"
JSON_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object",
                   type(None): "null"}


def request_field(default: Any, help: str, *, json: tuple | None, cli: Callable | str | None = None,
                  triton: str | None = None, triton_dims: tuple[int, ...] = (1,), triton_name: str | None = None,
                  aliases: tuple[str, ...] = (),
                  choices: Sequence[str] | None = None, limits: Mapping[str, Any] | None = None, compare: bool = True):
    """A request field and what the generated surfaces need of it.

    ``json``: the JSON types accepted (None: not in JSON); ``cli``: the flag's value parser, "flag" for a
    switch (None: not on the CLI); ``triton``: the Triton input data type (None: not a Triton input) and
    ``triton_dims`` its dims ([1]: a scalar), ``triton_name`` its input's name where it is not the field's (the
    model's output is ``image``); ``limits``: JSON-schema keywords for the published API
    schema (minimum, items, ...)."""
    meta = {"help": help, "json": json, "cli": cli, "triton": triton, "triton_dims": triton_dims,
            "triton_name": triton_name, "aliases": aliases,
            "choices": choices, "limits": dict(limits or {})}
    return field(default=default, metadata=meta, compare=compare)


def whole_number_list(text: str) -> tuple[int, ...]:
    """``--class-labels 3`` or ``0,1,2`` (also ``--timesteps``, ``--cache-full-steps``)."""
    try:
        labels = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None
    if any(x < 0 for x in labels):
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 0, got {text!r}")
    return labels


def npy_file(path: str) -> np.ndarray:
    """A ``--embeddings`` file: a float array saved with ``numpy.save`` (no pickles)."""
    try:
        return np.load(path, allow_pickle=False)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{path} is not a .npy array file ({str(exc).splitlines()[0]})") from None


class RequestSurfaces:
    """The surfaces of a frozen dataclass whose fields are :func:`request_field` declarations."""

    @classmethod
    def create(cls, request: RequestSurfaces | None = None, /, **values: Any) -> RequestSurfaces:
        """The Python API's constructor: ``request`` (if given) with ``values`` (field names or aliases) replaced."""
        values = _unalias(cls, values, "")
        if request is None:
            return cls(**values)
        if not isinstance(request, cls):
            raise InputError(f"expected a {cls.__name__}, got {type(request).__name__}")
        return dataclasses.replace(request, **values) if values else request

    @classmethod
    def from_json(cls, text: str | bytes, what: str = "request", extra: Mapping[str, type | tuple] | None = None,
                  besides: Mapping[str, Any] | None = None):
        """(request, the ``extra`` fields given) from JSON text (C ABI, HTTP); ``besides``: fields given outside the
        JSON (the C ABI's pixel buffers), refused when the JSON gives them too. Raises InputError with one line."""
        schema = _json_schema(cls)
        data = parse_object(text, what, {**schema, **(extra or {})})
        own = _unalias(cls, {k: v for k, v in data.items() if k in schema}, f"{what} ")
        for name in besides or {}:
            if name in own:
                raise InputError(f"the {what} JSON gives {name} and so does the pixel buffer; give one")
        return cls(**own, **(besides or {})), {k: v for k, v in data.items() if k not in schema}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The CLI flags of every request field that has one (generated from the fields' metadata)."""
        for f in fields(cls):
            parse = f.metadata["cli"]
            if parse is None:
                continue
            flags = [_flag(f.name), *(_flag(a) for a in f.metadata["aliases"])]
            if parse == "flag":
                parser.add_argument(*flags, dest=f.name, action="store_true", help=f.metadata["help"])
            else:
                parser.add_argument(*flags, dest=f.name, type=parse, default=f.default, choices=f.metadata["choices"],
                                    help=f.metadata["help"])

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RequestSurfaces:
        """From a namespace parsed with :meth:`add_arguments`'s flags."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if f.metadata["cli"] is not None})

    def cli_args(self) -> list[str]:
        """The CLI flags that give this request (fields without a flag must be at their defaults)."""
        args: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or (not isinstance(value, np.ndarray) and value == f.default):
                continue
            if f.metadata["cli"] is None or isinstance(value, np.ndarray):
                raise InputError(f"{f.name} cannot be given as a command-line value" +
                                 ("; save it with numpy.save and pass the file" if isinstance(value, np.ndarray) else ""))
            if isinstance(value, tuple):
                value = ",".join(str(v) for v in value)
            args += [_flag(f.name)] if f.metadata["cli"] == "flag" else [_flag(f.name), str(value)]
        return args

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON request as a JSON schema (an object of the JSON fields and their aliases; nothing else)."""
        properties = {}
        for f in fields(cls):
            if f.metadata["json"] is None:
                continue
            types = [JSON_TYPE_NAMES[t] for t in f.metadata["json"]]
            if "number" in types and "integer" in types:  # a JSON number may be written as an integer
                types.remove("integer")
            prop: dict[str, Any] = {"type": types[0] if len(types) == 1 else types, "description": f.metadata["help"]}
            if f.metadata["choices"]:
                prop["enum"] = [*f.metadata["choices"], *([None] if "null" in types else [])]
            prop.update(f.metadata["limits"])
            if f.default is not None:
                prop["default"] = f.default
            for name in (f.name, *f.metadata["aliases"]):
                properties[name] = prop if name == f.name else {**prop, "description": f"alias of {f.name}"}
        return {"type": "object", "properties": properties, "additionalProperties": False}

    @classmethod
    def triton_inputs(cls) -> list[tuple[str, str, tuple[int, ...]]]:
        """(name, Triton data type, dims) of every field that is a Triton input (each optional; dims [1]: a scalar)."""
        return [(triton_name(f), f.metadata["triton"], f.metadata["triton_dims"]) for f in fields(cls) if f.metadata["triton"]]

    @classmethod
    def from_triton(cls, read: Callable[[str], Any]) -> RequestSurfaces:
        """From a Triton request: ``read(name)`` is the value given for input ``name`` (None when absent): the
        scalar of a [1] input, the array of the others."""
        values = {}
        for f in fields(cls):
            if f.metadata["triton"] and (value := read(triton_name(f))) is not None:
                try:
                    values[f.name] = (_from_triton(f.metadata["triton"], value) if f.metadata["triton_dims"] == (1,)
                                      else np.asarray(value))
                except (TypeError, ValueError, OverflowError) as exc:  # UnicodeDecodeError is a ValueError
                    raise InputError(f"input {triton_name(f)!r} is not a {f.metadata['triton'].removeprefix('TYPE_')} value "
                                     f"({type(exc).__name__})") from None
        return cls(**values)


def triton_name(f: dataclasses.Field) -> str:
    """The Triton input's name of a request field."""
    return f.metadata["triton_name"] or f.name


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _json_schema(cls: type) -> dict[str, tuple]:
    schema = {}
    for f in fields(cls):
        if f.metadata["json"] is not None:
            for name in (f.name, *f.metadata["aliases"]):
                schema[name] = f.metadata["json"]
    return schema


def _unalias(cls: type, values: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Field names for aliases (``batch`` → ``count``); an alias given with its field is refused."""
    known = {f.name: f for f in fields(cls)}
    out: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, value in values.items():
        name = next((f.name for f in known.values() if key in f.metadata["aliases"]), key)
        if name not in known:
            raise InputError(f"{what}has no field {brief(key)}; known: {', '.join(known)}")
        if name in out:
            alias = key if key != name else given_as[name]
            raise InputError(f"{what}gives both {name!r} and its alias {alias!r}; give one")
        out[name] = value
        given_as[name] = key
    return out


def _from_triton(kind: str, value: Any) -> Any:
    if kind == "TYPE_STRING":
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    if kind == "TYPE_BOOL":
        return bool(value)
    if kind == "TYPE_FP32":
        return float(value)
    if isinstance(value, (float, np.floating)) and not float(value).is_integer():
        raise ValueError(f"{value} is not a whole number")
    return int(value)


def schema_text(request_type: type | None = None) -> str:
    """The request's JSON schema as published in :data:`SCHEMA_FILE` (``request_type``: SampleRequest's)."""
    if request_type is None:
        from .requests import SampleRequest as request_type
    return json.dumps({"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "ddpm-deploy sample request",
                       **request_type.json_schema()}, indent=2) + "\n"

