"""Dataclasses from YAML mappings, checked: the validation every params section goes through.

`build(cls, data, at)` makes dataclass `cls` from a dict: unknown keys (with a "did you mean"), wrong types (bool
is not a number here, `1e-3` is a float as YAML 1.2 reads it), values outside a field's `rng(...)` metadata, and a
section's own `check(at)`; any failure is one `ConfigError` line naming the key by its dotted path.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any

# A number written as YAML 1.2 reads it (`1e-3`); PyYAML's YAML 1.1 reads that as a string.
FLOAT_TEXT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


class ConfigError(ValueError):
    """A params file that is missing, malformed or out of range; the message names the key."""


def rng(ge=None, gt=None, le=None, lt=None, choices=None):
    """Field metadata: the allowed range or values of a parameter."""
    return {k: v for k, v in dict(ge=ge, gt=gt, le=le, lt=lt, choices=choices).items() if v is not None}


def require_sections(cls, data: Any, at: str) -> None:
    """A params file spells out every section (a stage run without one would silently use code defaults);
    single keys inside a section may be left to their defaults."""
    if not isinstance(data, dict):
        return  # build() names the wrong type
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            if f.name not in data:
                raise ConfigError(f"missing section '{_join(at, f.name)}' (every section must be present; "
                                  "copy it from configs/smoke.yaml or params.yaml)")
            require_sections(hints[f.name], data[f.name], _join(at, f.name))


def build(cls, data: Any, at: str):
    """Build dataclass `cls` from a dict, checking keys, types and ranges recursively."""
    if not isinstance(data, dict):
        raise ConfigError(f"{at or 'top level'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{_join(at, close[0])}'?)" if close else ""
            raise ConfigError(f"unknown key '{_join(at, key)}'{hint}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], _join(at, name), f.metadata)
    obj = cls(**kwargs)
    if hasattr(obj, "check"):
        obj.check(at)
    return obj


def _join(at: str, key: Any) -> str:
    return f"{at}.{key}" if at else str(key)


def _convert(tp, value, at: str, meta: dict):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (tp,) = [a for a in args if a is not type(None)]
        return _convert(tp, value, at, meta)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, at)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{at}: expected a list, got {type(value).__name__} {value!r}")
        return [_convert(item, v, f"{at}[{i}]", meta) for i, v in enumerate(value)]
    return _check_range(_scalar(tp, value, at), at, meta)


def _scalar(tp, value, at: str):
    # bool is an int in Python: refuse it where a number is expected, and vice versa.
    if tp is float and isinstance(value, str) and FLOAT_TEXT.fullmatch(value.strip()):
        value = float(value)  # `1e-3` as YAML 1.2 (and DVC) read it
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[tp]
    if not ok:
        raise ConfigError(f"{at}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    if tp is not float:
        return value
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(f"{at}: must be a finite number, got {value!r:.40}")
    return number


def _check_range(v, at: str, meta: dict):
    if "choices" in meta and v not in meta["choices"]:
        raise ConfigError(f"{at}: must be one of {', '.join(map(str, meta['choices']))}; got {v!r}")
    for op, test, word in (("ge", lambda a, b: a >= b, ">="), ("gt", lambda a, b: a > b, ">"),
                           ("le", lambda a, b: a <= b, "<="), ("lt", lambda a, b: a < b, "<")):
        if op in meta and not test(v, meta[op]):
            raise ConfigError(f"{at}: must be {word} {meta[op]}, got {v!r}")
    return v
