"""The classifier's private state file: versioned, checksummed, optionally encrypted, bounded, no pickle.

Layout (``docs/state-format.md``)::

    b"EDGEMETA-STATE\\n"  +  header JSON (one line, at most 4 KiB)  +  b"\\n"  +  payload

``header``: ``{"encryption": "none" | "aes-256-gcm", "format": "edgemeta-state", "payload_bytes": n,
"payload_sha256": hex, "version": 2}``. With encryption the payload is ``nonce (12 bytes) + AES-GCM
ciphertext`` of the body. Version 2 body: ``uint32 LE index length L + index JSON (L bytes) + raw
little-endian arrays``, the index naming each array's dtype and shape, so every size is known
before anything is allocated, and nothing is ever decompressed. Version-1 bodies (an uncompressed
``.npz``) are still read, with the same bounds. No raw sample is ever stored: only embeddings.

Every damaged, altered or hostile file raises :class:`StateError` naming the check that failed.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemeta.contract.atomic_files import atomic_write_bytes, file_in_the_way, remove_stale_temporaries
from edgemeta.contract.strict_json import loads_strict
from edgemeta.errors import StateError

MAGIC = b"EDGEMETA-STATE\n"
STATE_FORMAT = "edgemeta-state"
STATE_VERSION = 2
READABLE_VERSIONS = (1, 2)
INKS = ("high", "low", "auto")
MAX_HEADER_BYTES = 4096              # the header line is about 160 bytes
MAX_INDEX_BYTES = 16 << 20           # index JSON: labels of up to ~1,000 classes, generously
MAX_JSON_DEPTH = 8                   # the index nests 4 deep
MAX_ARRAYS = 64                      # embeddings, sample_class and a few head parameters
MAX_PAYLOAD_BYTES = 256 << 20        # e.g. 1,000 classes x 40 shots of 1,600-d float32 embeddings
MAX_NDIM = 4
INT64 = (-(1 << 63), (1 << 63) - 1)
_HEADER_KEYS = {"encryption", "format", "payload_bytes", "payload_sha256", "version"}
_DTYPES = {"float32": np.dtype("<f4"), "int64": np.dtype("<i8"), "float64": np.dtype("<f8")}


@dataclass
class StateData:
    """What a classifier persists. ``labels``: the class labels (str or int) in column order."""

    bundle_id: str
    labels: list[Any]
    embeddings: np.ndarray          # float32 [M, D]
    sample_class: np.ndarray        # int64 [M], index into labels
    head: dict[str, np.ndarray]     # adapted head parameters, float32
    meta: dict[str, Any]            # "method" (str), "ink" (one of INKS)
    memory: np.ndarray | None = None        # recurrent bundles: float32 [C, H], one row per label (no embeddings)
    memory_shots: np.ndarray | None = None  # int64 [C]: samples read into each row
    unlabeled: np.ndarray | None = None     # float32 [U, D]: the unlabelled pool (refine bundles)


def _loads_strict(data: bytes, what: str) -> Any:
    """UTF-8 JSON without duplicate keys, NaN/Infinity, integers over 20 digits or deep nesting."""
    return loads_strict(data, what, max_bytes=MAX_INDEX_BYTES, max_depth=MAX_JSON_DEPTH,
                        max_int_digits=20, error=StateError)   # range checked later


def _keys(obj: Any, required: set[str], optional: set[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise StateError(f"{what} is {type(obj).__name__}; expected a JSON object")
    missing, extra = required - obj.keys(), obj.keys() - required - optional
    if missing or extra:
        raise StateError(f"{what} has keys {sorted(obj)}; expected {sorted(required)}"
                         + (f" and optionally {sorted(optional)}" if optional else ""))
    return obj


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# ---------------------------------------------------------------- writing

def _body_v2(state: StateData) -> bytes:
    """The plain version-2 body: index length, index JSON, raw little-endian arrays."""
    arrays = [("embeddings", np.ascontiguousarray(state.embeddings, "<f4")),
              ("sample_class", np.ascontiguousarray(state.sample_class, "<i8"))]
    arrays += [(f"head.{k}", np.ascontiguousarray(v, "<f4")) for k, v in sorted(state.head.items())]
    if state.unlabeled is not None and len(state.unlabeled):      # written only when there is a pool
        arrays.append(("unlabeled", np.ascontiguousarray(state.unlabeled, "<f4")))
    if state.memory is not None:
        arrays += [("memory", np.ascontiguousarray(state.memory, "<f4")),
                   ("memory_shots", np.ascontiguousarray(state.memory_shots, "<i8"))]
    meta = {**{k: state.meta[k] for k in ("method", "ink") if k in state.meta},
            "bundle_id": state.bundle_id, "labels": list(state.labels)}
    return pack_body(arrays, meta)


def pack_body(arrays: list[tuple[str, np.ndarray]], meta: dict[str, Any]) -> bytes:
    """A version-2 body of named little-endian arrays (float32, float64 or int64) and a JSON meta."""
    names = {v: k for k, v in _DTYPES.items()}
    index = {"arrays": [{"name": n, "dtype": names[a.dtype], "shape": list(a.shape)} for n, a in arrays],
             "meta": meta}
    blob = json.dumps(index, sort_keys=True, ensure_ascii=False).encode()
    return struct.pack("<I", len(blob)) + blob + b"".join(a.tobytes() for _, a in arrays)


def _aad(version: int, encryption: str) -> bytes:
    return json.dumps({"format": STATE_FORMAT, "version": version, "encryption": encryption}).encode()


def _aesgcm(key: bytes):  # noqa: ANN202 - cryptography type
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise StateError("encrypted state needs the 'cryptography' package: pip install 'edgemeta[crypto]'") from exc
    if not isinstance(key, (bytes, bytearray)) or len(key) != 32:
        raise StateError("the state key must be 32 bytes (AES-256); e.g. os.urandom(32), kept in the OS keystore")
    return AESGCM(bytes(key))


def encode_state(state: StateData, key: bytes | None = None) -> bytes:
    """Serialise ``state`` as a version-2 state file (encrypted with ``key``: 32 bytes, if given)."""
    return seal_body(_body_v2(state), key)


def seal_body(payload: bytes, key: bytes | None = None) -> bytes:
    """A version-2 state file (magic, header, payload) around ``payload`` (encrypted with ``key`` if given)."""
    encryption = "none" if key is None else "aes-256-gcm"
    if key is not None:
        nonce = os.urandom(12)
        payload = nonce + _aesgcm(key).encrypt(nonce, payload, _aad(STATE_VERSION, encryption))
    header = {"format": STATE_FORMAT, "version": STATE_VERSION, "encryption": encryption,
              "payload_bytes": len(payload), "payload_sha256": hashlib.sha256(payload).hexdigest()}
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload


# ---------------------------------------------------------------- reading: header

def parse_header(prefix: bytes, total_bytes: int, source: str) -> tuple[dict[str, Any], int]:
    """Check magic and header from the file's first bytes (``prefix``, at least the header's bound)
    and its size; returns the header and the payload's offset."""
    if not prefix.startswith(MAGIC):
        raise StateError(f"{source} is not an edgemeta state file (bad magic)")
    end = prefix.find(b"\n", len(MAGIC), len(MAGIC) + MAX_HEADER_BYTES + 1)
    if end < 0:
        if total_bytes <= len(MAGIC) + MAX_HEADER_BYTES:
            raise StateError(f"{source} is truncated (no header)")
        raise StateError(f"{source}: header line is longer than {MAX_HEADER_BYTES} bytes")
    header = _keys(_loads_strict(prefix[len(MAGIC):end], f"{source}: header"), _HEADER_KEYS, set(),
                   f"{source}: header")
    fmt, ver = header["format"], header["version"]
    if fmt != STATE_FORMAT or not _is_int(ver) or ver not in READABLE_VERSIONS:
        raise StateError(f"{source}: state format {fmt!r} version {ver!r} is not supported (this edgemeta "
                         f"reads {STATE_FORMAT} v" + ", v".join(map(str, READABLE_VERSIONS)) + ")")
    if header["encryption"] not in ("none", "aes-256-gcm"):
        raise StateError(f"{source}: unknown encryption {header['encryption']!r}; expected 'none' or 'aes-256-gcm'")
    n = header["payload_bytes"]
    if not _is_int(n) or n < 0:
        raise StateError(f"{source}: header payload_bytes is {n!r}; expected a byte count")
    if n > MAX_PAYLOAD_BYTES:
        raise StateError(f"{source}: header payload_bytes is {n}; a state holds at most {MAX_PAYLOAD_BYTES} bytes")
    digest = header["payload_sha256"]
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise StateError(f"{source}: header payload_sha256 is not 64 lowercase hex digits")
    if total_bytes - (end + 1) != n:
        raise StateError(f"{source} is truncated or padded: payload is {total_bytes - (end + 1)} bytes, "
                         f"header says {n}")
    return header, end + 1


def _open_payload(header: dict[str, Any], payload: bytes, key: bytes | None, source: str) -> bytes:
    """Checksum, then decrypt: the plain body."""
    if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        raise StateError(f"{source}: checksum mismatch, the file was altered or damaged")
    if header["encryption"] == "none":
        if key is not None:
            raise StateError(f"{source} is not encrypted but a key was given; refusing to guess")
        return payload
    if key is None:
        raise StateError(f"{source} is encrypted; pass the key it was saved with")
    from cryptography.exceptions import InvalidTag

    aes = _aesgcm(key)
    if len(payload) < 12 + 16:
        raise StateError(f"{source}: encrypted payload of {len(payload)} bytes is shorter than nonce + tag")
    try:
        return aes.decrypt(payload[:12], payload[12:], _aad(header["version"], "aes-256-gcm"))
    except InvalidTag:
        raise StateError(f"{source}: wrong key (or altered ciphertext); cannot decrypt") from None


# ---------------------------------------------------------------- reading: bodies

def _arrays_v2(body: bytes, source: str) -> tuple[dict[str, np.ndarray], Any]:
    """Arrays and meta of a version-2 body; sizes checked against the body before any allocation."""
    if len(body) < 4:
        raise StateError(f"{source}: body of {len(body)} bytes has no index length")
    (n_index,) = struct.unpack_from("<I", body)
    if n_index > min(MAX_INDEX_BYTES, len(body) - 4):
        raise StateError(f"{source}: index length {n_index} exceeds the body or the {MAX_INDEX_BYTES}-byte bound")
    index = _keys(_loads_strict(body[4:4 + n_index], f"{source}: index"), {"arrays", "meta"}, set(),
                  f"{source}: index")
    specs = index["arrays"]
    if not isinstance(specs, list) or len(specs) > MAX_ARRAYS:
        raise StateError(f"{source}: index arrays must be a list of at most {MAX_ARRAYS} entries")
    offset, arrays = 4 + n_index, {}
    for spec in specs:
        spec = _keys(spec, {"name", "dtype", "shape"}, set(), f"{source}: index array entry")
        name, dtype, shape = spec["name"], spec["dtype"], spec["shape"]
        if not isinstance(name, str) or name in arrays:
            raise StateError(f"{source}: array name {name!r} is not a string or is repeated")
        if dtype not in _DTYPES:
            raise StateError(f"{source}: array {name!r} has dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
        if (not isinstance(shape, list) or len(shape) > MAX_NDIM
                or not all(_is_int(d) and 0 <= d < (1 << 31) for d in shape)):
            raise StateError(f"{source}: array {name!r} has shape {shape!r}; expected at most {MAX_NDIM} "
                             f"non-negative dimensions")
        size = math.prod(shape) * _DTYPES[dtype].itemsize
        if size > len(body) - offset:
            raise StateError(f"{source}: array {name!r} of shape {shape} needs {size} bytes; the body has "
                             f"{len(body) - offset} left")
        arrays[name] = np.frombuffer(body, _DTYPES[dtype], math.prod(shape), offset).reshape(shape).copy()
        offset += size
    if offset != len(body):
        raise StateError(f"{source}: {len(body) - offset} bytes follow the last array; expected none")
    return arrays, index["meta"]


_NPY_HEADER = re.compile(r"\{'descr': '(<f4|<i8|\|u1)', 'fortran_order': False, 'shape': \(((?:\d+, )*\d+,?|)\), \} *\n")


def _npy(raw: bytes, name: str, source: str) -> np.ndarray:
    """One ``.npy`` member as written by ``np.savez``: the header must match exactly, the data size too."""
    if raw[:6] != b"\x93NUMPY" or len(raw) < 10 or raw[6] not in (1, 2, 3):
        raise StateError(f"{source}: version-1 member {name!r} is not a .npy array")
    start = 10 if raw[6] == 1 else 12
    n_header = struct.unpack_from("<H" if raw[6] == 1 else "<I", raw, 8)[0]
    m = _NPY_HEADER.fullmatch(raw[start:start + n_header].decode("latin-1"))
    if m is None:
        raise StateError(f"{source}: version-1 member {name!r} has an unexpected .npy header")
    shape = [int(d) for d in m.group(2).replace(",", " ").split()]
    dtype = np.dtype(m.group(1))
    if len(shape) > MAX_NDIM or math.prod(shape) * dtype.itemsize != len(raw) - start - n_header:
        raise StateError(f"{source}: version-1 member {name!r} has shape {shape} that does not match its "
                         f"{len(raw) - start - n_header} data bytes")
    return np.frombuffer(raw, dtype, math.prod(shape), start + n_header).reshape(shape).copy()


def _arrays_v1(body: bytes, source: str) -> tuple[dict[str, np.ndarray], Any]:
    """Arrays and meta of a version-1 body (an uncompressed ``.npz``), checked from the zip's
    central directory before any member is read; compressed members are refused, never inflated."""
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            if len(infos) > MAX_ARRAYS or len(set(names)) != len(names):
                raise StateError(f"{source}: version-1 payload has {len(infos)} members ({len(set(names))} "
                                 f"distinct); expected at most {MAX_ARRAYS}, each once")
            for i in infos:
                if i.compress_type != zipfile.ZIP_STORED or i.flag_bits & 0x1 or i.file_size != i.compress_size:
                    raise StateError(f"{source}: version-1 member {i.filename!r} is compressed or encrypted; "
                                     f"edgemeta writes stored members only")
                if not i.filename.endswith(".npy"):
                    raise StateError(f"{source}: version-1 member {i.filename!r} is not a .npy array")
            if sum(i.file_size for i in infos) > len(body):
                raise StateError(f"{source}: version-1 members claim more bytes than the payload holds")
            arrays = {i.filename[:-4]: _npy(zf.read(i), i.filename, source) for i in infos}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OverflowError, struct.error, ValueError,
            NotImplementedError, RuntimeError, zlib.error, OSError, UnicodeDecodeError) as exc:
        if isinstance(exc, StateError):
            raise
        raise StateError(f"{source}: version-1 payload is not a valid .npz ({type(exc).__name__}: "
                         f"{str(exc)[:120]})") from None
    meta = arrays.pop("meta", None)
    if meta is None or meta.dtype != np.uint8 or meta.ndim != 1:
        raise StateError(f"{source}: version-1 payload has no meta (uint8 JSON) member")
    meta = _keys(_loads_strict(meta.tobytes(), f"{source}: meta"), {"bundle_id", "labels", "label_type"},
                 {"method", "ink"}, f"{source}: meta")
    kind, labels = meta.pop("label_type"), meta["labels"]
    fits = _is_int if kind == "int" else (lambda v: isinstance(v, str))
    if kind not in ("int", "str") or not isinstance(labels, list) or not all(map(fits, labels)):
        raise StateError(f"{source}: meta label_type {kind!r} does not match the labels")
    return arrays, meta


def _labels(labels: Any, source: str) -> list[Any]:
    if not isinstance(labels, list):
        raise StateError(f"{source}: labels must be a list")
    if not (all(isinstance(v, str) for v in labels)
            or all(_is_int(v) and INT64[0] <= v <= INT64[1] for v in labels)):
        raise StateError(f"{source}: labels must be all strings or all 64-bit integers")
    if len(set(labels)) != len(labels):
        raise StateError(f"{source}: labels repeat a class; expected each label once")
    return labels


def _state(arrays: dict[str, np.ndarray], meta: Any, source: str) -> StateData:
    """Check arrays and meta of either version and assemble the state."""
    meta = _keys(meta, {"bundle_id", "labels"}, {"method", "ink"}, f"{source}: meta")
    bundle_id = meta["bundle_id"]
    if not isinstance(bundle_id, str) or not re.fullmatch(r"[0-9a-f]{64}", bundle_id):
        raise StateError(f"{source}: bundle_id is not a bundle's 64-hex-digit manifest sha256")
    labels = _labels(meta["labels"], source)
    if "ink" in meta and meta["ink"] not in INKS:
        raise StateError(f"{source}: ink is {meta['ink']!r}; expected one of {list(INKS)}")
    if "method" in meta and not (isinstance(meta["method"], str) and 0 < len(meta["method"]) <= 64):
        raise StateError(f"{source}: method must be a short string")
    emb, cls = arrays.pop("embeddings", None), arrays.pop("sample_class", None)
    if emb is None or emb.dtype != np.float32 or emb.ndim != 2:
        raise StateError(f"{source}: embeddings must be a float32 [M, D] array")
    if not np.isfinite(emb).all():
        raise StateError(f"{source}: embeddings hold NaN or infinity; expected finite numbers")
    if cls is None or cls.dtype != np.int64 or cls.shape != (len(emb),):
        raise StateError(f"{source}: sample_class must be int64 [M], one class index per embedding")
    if len(cls) and (cls.min() < 0 or cls.max() >= len(labels)):
        raise StateError(f"{source}: sample_class holds an index outside the {len(labels)} labels")
    memory, shots = _memory(arrays, len(labels), len(emb), source)
    if memory is None and len(np.unique(cls)) != len(labels):
        raise StateError(f"{source}: {len(labels) - len(np.unique(cls))} labels have no embedding; expected "
                         f"every class to hold at least one")
    head = {}
    for name, value in arrays.items():
        if not name.startswith("head.") or value.dtype != np.float32 or not np.isfinite(value).all():
            raise StateError(f"{source}: unexpected array {name!r}; expected finite float32 head.<name> parameters")
        head[name[5:]] = value
    return StateData(bundle_id, labels, emb, cls, head, {k: meta[k] for k in ("method", "ink") if k in meta},
                     memory, shots)


def _memory(arrays: dict[str, np.ndarray], n_labels: int, n_embeddings: int,
            source: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A recurrent bundle's ``memory [C, H]`` and ``memory_shots [C]`` (both or neither), taken out of
    ``arrays``: finite, one row per label, at least one sample each, and no embeddings beside them."""
    memory, shots = arrays.pop("memory", None), arrays.pop("memory_shots", None)
    if memory is None and shots is None:
        return None, None
    if memory is None or memory.dtype != np.float32 or memory.ndim != 2 or len(memory) != n_labels:
        raise StateError(f"{source}: memory must be a float32 [C, H] array with one row per label ({n_labels})")
    if not np.isfinite(memory).all():
        raise StateError(f"{source}: memory holds NaN or infinity; expected finite numbers")
    if shots is None or shots.dtype != np.int64 or shots.shape != (n_labels,) or (n_labels and shots.min() < 1):
        raise StateError(f"{source}: memory_shots must be int64 [C] with at least one sample per class")
    if n_embeddings:
        raise StateError(f"{source}: holds both memory and {n_embeddings} embeddings; a memory state holds none")
    return memory, shots


def decode_payload(header: dict[str, Any], payload: bytes, key: bytes | None, source: str) -> StateData:
    """Verify and parse the payload of a checked header; raises :class:`StateError` naming the check."""
    body = _open_payload(header, payload, key, source)
    arrays, meta = (_arrays_v2 if header["version"] == 2 else _arrays_v1)(body, source)
    unlabeled = arrays.pop("unlabeled", None)
    state = _state(arrays, meta, source)
    state.unlabeled = _unlabeled_pool(unlabeled, state.embeddings.shape[1], source)
    return state


def _unlabeled_pool(pool: np.ndarray | None, dim: int, source: str) -> np.ndarray | None:
    """The ``unlabeled`` array (semi-supervised refinement's pool): float32 ``[U, D]``, finite, the
    embeddings' width."""
    if pool is None:
        return None
    if pool.dtype != np.float32 or pool.ndim != 2 or pool.shape[1] != dim:
        raise StateError(f"{source}: unlabeled must be a float32 [U, {dim}] array (the embeddings' width), got "
                         f"{pool.dtype} {list(pool.shape)}")
    if not np.isfinite(pool).all():
        raise StateError(f"{source}: unlabeled holds NaN or infinity; expected finite numbers")
    return pool


def decode_state(data: bytes, key: bytes | None = None, source: str = "state") -> StateData:
    """Parse and verify a state file's bytes; raises :class:`StateError` naming what is wrong."""
    header, start = parse_header(data[:len(MAGIC) + MAX_HEADER_BYTES + 1], len(data), source)
    return decode_payload(header, data[start:], key, source)


def write_state(path: str | os.PathLike, state: StateData, key: bytes | None = None) -> None:
    """Write atomically, readable by this user only: a crash leaves the previous file or the new one,
    never a mix; temporaries left by earlier crashed saves (full copies of an old state, which may
    hold a class the user has since forgotten) are deleted once the new state is in place. Other
    processes may save the same path at the same time: the last rename wins."""
    write_sealed(path, encode_state(state, key))


def write_sealed(path: str | os.PathLike, data: bytes) -> None:
    """Write a sealed state file's bytes atomically (mode 0600), then remove stale temporaries."""
    if len(data) > MAX_PAYLOAD_BYTES + len(MAGIC) + MAX_HEADER_BYTES:   # never save what cannot be read back
        raise StateError(f"the state is {len(data)} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit a state file may "
                         f"hold; forget classes or keep fewer shots per class")
    try:
        atomic_write_bytes(path, data, mode=0o600)
    except OSError as exc:                         # strerror names what was expected
        raise StateError(f"cannot save the state to {path}: {exc.strerror}") from None
    remove_stale_temporaries(path)


def read_state(path: str | os.PathLike, key: bytes | None = None) -> StateData:
    """Read and verify a state file, reading no more than its header declares."""
    header, payload = read_sealed(path)
    return decode_payload(header, payload, key, str(path))


def read_body(path: str | os.PathLike, key: bytes | None = None) -> tuple[dict[str, np.ndarray], Any]:
    """The named arrays and meta of a version-2 state file (header, checksum, decryption and array sizes
    checked; what the arrays mean is the caller's to check)."""
    header, payload = read_sealed(path)
    if header["version"] != 2:
        raise StateError(f"{path}: state version {header['version']}; expected version 2")
    return _arrays_v2(_open_payload(header, payload, key, str(path)), str(path))


def read_sealed(path: str | os.PathLike) -> tuple[dict[str, Any], bytes]:
    """A state file's checked header and its payload, reading no more than the header declares."""
    path = Path(path)
    if path.is_dir():
        raise StateError(f"{path} is a folder; expected a state file written by FewShotClassifier.save")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))   # a FIFO or device must not block
    except (FileNotFoundError, NotADirectoryError):
        blocker = file_in_the_way(path)
        if blocker is not None:
            raise StateError(f"no state file at {path}: {blocker} is a file, not a folder") from None
        raise StateError(f"no state file at {path}") from None
    except OSError as exc:
        raise StateError(f"cannot read the state file {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise StateError(f"{path} is not a regular file; expected a state file written by "
                                 f"FewShotClassifier.save")
            total = st.st_size
            header, start = parse_header(fh.read(len(MAGIC) + MAX_HEADER_BYTES + 1), total, str(path))
            fh.seek(start)
            payload = fh.read(header["payload_bytes"])
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise StateError(f"no state file at {path}") from None
    except OSError as exc:
        raise StateError(f"cannot read the state file {path}: {exc.strerror or exc}") from None
    if len(payload) != header["payload_bytes"]:
        raise StateError(f"{path} is truncated: it shrank while being read")
    return header, payload
