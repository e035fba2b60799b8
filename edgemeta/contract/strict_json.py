"""Strict, bounded JSON parsing for untrusted files: bundle manifests and state headers (stdlib only).

``json.loads`` alone accepts duplicate keys (the last wins), ``NaN``/``Infinity``, integers of any
length (a 5,000-digit one raises a bare ValueError) and nesting until the interpreter's recursion
limit. :func:`loads_strict` refuses all of these with the caller's error class (``BundleError`` for
manifests, ``StateError`` for states) naming the rule.
"""

from __future__ import annotations

import json
import math
import re
from functools import partial
from typing import Any

from edgemeta.errors import BundleError, EdgemetaError

MAX_BYTES = 1 << 20          # 1 MiB: the shipped manifests are about 6 KB
MAX_DEPTH = 32               # the shipped manifests nest 5 deep
MAX_NUMBER_CHARS = 40        # digits of an integer / characters of a float literal

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


class _Refused(Exception):
    """Internal: raised inside json's hooks, turned into BundleError by :func:`loads_strict`."""


def nesting_depth(data: bytes, limit: int) -> int:
    """Deepest bracket nesting of JSON text ``data`` (strings skipped); stops counting past ``limit``."""
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub(b'""', data)):
        depth += 1 if m.group() in (b"[", b"{") else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"duplicate key {key!r} in one object (expected each key once)")
        out[key] = value
    return out


def _int(text: str, max_digits: int = MAX_NUMBER_CHARS) -> int:
    if len(text.lstrip("-")) > max_digits:
        raise _Refused(f"an integer of {len(text)} digits (expected at most {max_digits})")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number literal of {len(text)} characters (expected at most {MAX_NUMBER_CHARS})")
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text} overflows a float (expected a finite number)")
    return value


def _constant(name: str) -> float:
    raise _Refused(f"the constant {name} (JSON has no NaN or Infinity; expected a finite number)")


def loads_strict(data: bytes, what: str, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
                 max_int_digits: int = MAX_NUMBER_CHARS, error: type[EdgemetaError] = BundleError) -> Any:
    """Parse UTF-8 JSON ``data``; raises ``error("{what} ...")`` on anything not strict, bounded JSON."""
    if len(data) > max_bytes:
        raise error(f"{what} is larger than {max_bytes} bytes; expected a small JSON document")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not valid JSON (not UTF-8: {exc}); the file is damaged") from exc
    depth = nesting_depth(data, max_depth)
    if depth > max_depth:
        raise error(f"{what} nests deeper than {max_depth} levels; expected a plain document")
    try:
        return json.loads(text, object_pairs_hook=_pairs, parse_int=partial(_int, max_digits=max_int_digits),
                          parse_float=_float, parse_constant=_constant)
    except _Refused as exc:
        raise error(f"{what} is not strict JSON: {exc}") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise error(f"{what} is not valid JSON ({exc}); the file is damaged") from None
