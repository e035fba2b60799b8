"""Regression samples from a CSV file: one sample per row, ``features..., target(s)`` (adapt) or
``features...`` (predict); numpy + stdlib only.

Rules: UTF-8 text, comma-separated, at most :data:`MAX_BYTES` bytes and :data:`MAX_ROWS` rows; an
optional first row of column names (taken as a header when none of its fields is a number); blank
lines are skipped; every other row has exactly the expected number of fields, each a plain decimal
number (``12``, ``-0.5``, ``3e-4``; no ``nan``, ``inf``, ``1_000`` or hex). Anything else raises
:class:`InputError` naming the file, the row (1-based line number) and what was expected.
"""

from __future__ import annotations

import csv
import io
import os
import re
import stat
from pathlib import Path

import numpy as np

from edgemeta.errors import InputError

MAX_BYTES = 64 << 20           # 64 MiB
MAX_ROWS = 1_000_000
MAX_FIELD_CHARS = 64
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,4})?")


def _read_text(path: Path) -> str:
    """The file's text, refused unread when it is not a regular file or larger than :data:`MAX_BYTES`."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise InputError(f"cannot read the CSV file {path}: {exc.strerror}; expected a readable file") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise InputError(f"{path} is not a regular file; expected a CSV file")
    with os.fdopen(fd, "rb") as fh:
        if st.st_size > MAX_BYTES:
            raise InputError(f"{path} is {st.st_size} bytes; a CSV file may hold at most {MAX_BYTES} bytes "
                             f"(split it and adapt in parts)")
        data = fh.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise InputError(f"{path} grew beyond {MAX_BYTES} bytes while being read")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text (byte {exc.start}); expected a CSV file") from None


def _number(field: str, path: Path, line: int, col: int) -> float:
    text = field.strip()
    if len(text) > MAX_FIELD_CHARS or not _NUMBER.fullmatch(text):
        shown = text if len(text) <= 20 else text[:17] + "..."
        raise InputError(f"{path} row {line} column {col + 1}: {shown!r} is not a number; expected a plain decimal "
                         f"number such as -0.5 or 3e-4")
    value = float(text)
    if not np.isfinite(value) or abs(value) > 3.0e38:
        raise InputError(f"{path} row {line} column {col + 1}: {text} is beyond ±3e38; expected a number that fits "
                         f"float32")
    return value


def read_samples(path: str | os.PathLike, columns: int) -> np.ndarray:
    """The CSV's numeric rows as float64 ``[N, columns]`` (at least one row)."""
    path = Path(path)
    text = _read_text(path)
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        raise InputError(f"{path} is not valid CSV ({exc}); expected comma-separated numbers") from None
    out: list[list[float]] = []
    for i, row in enumerate(rows):
        line = i + 1
        if not row or all(not f.strip() for f in row):
            continue
        if not out and i == 0 and not any(_NUMBER.fullmatch(f.strip()) for f in row):
            continue                                                     # a header of column names
        if len(row) != columns:
            raise InputError(f"{path} row {line} has {len(row)} fields; expected {columns} (every row the same)")
        if len(out) >= MAX_ROWS:
            raise InputError(f"{path} has more than {MAX_ROWS} rows; split it and adapt in parts")
        out.append([_number(f, path, line, c) for c, f in enumerate(row)])
    if not out:
        raise InputError(f"{path} holds no rows of numbers; expected one sample per row")
    return np.array(out, np.float64)
