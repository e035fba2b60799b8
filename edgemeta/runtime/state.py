"""The classifier's private state file: versioned, checksummed, optionally encrypted, no pickle.

Layout (``docs/state-format.md``)::

    b"EDGEMETA-STATE\\n"  +  header JSON (one line)  +  b"\\n"  +  payload

``header``: ``{"format": "edgemeta-state", "version": 1, "encryption": "none" | "aes-256-gcm",
"payload_bytes": n, "payload_sha256": hex}``. ``payload``: an uncompressed ``.npz`` (read with
``allow_pickle=False``) holding ``embeddings`` float32 ``[M, D]``, ``sample_class`` int64 ``[M]``,
one array per head parameter (``head.<name>``) and ``meta`` (UTF-8 JSON as uint8). With
encryption the payload is ``nonce (12 bytes) + AES-GCM ciphertext`` and the header line is bound
as associated data. No raw sample is ever stored: only embeddings.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemeta.contract.atomic_files import atomic_write_bytes, remove_stale_temporaries
from edgemeta.errors import StateError

MAGIC = b"EDGEMETA-STATE\n"
STATE_FORMAT = "edgemeta-state"
STATE_VERSION = 1
_WRITE_LOCK = threading.Lock()


@dataclass
class StateData:
    """What a classifier persists. ``labels``: the class labels (str or int) in column order."""

    bundle_id: str
    labels: list[Any]
    embeddings: np.ndarray          # float32 [M, D]
    sample_class: np.ndarray        # int64 [M], index into labels
    head: dict[str, np.ndarray]     # adapted head parameters
    meta: dict[str, Any]


def _aesgcm(key: bytes):  # noqa: ANN202 - cryptography type
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise StateError("encrypted state needs the 'cryptography' package: pip install 'edgemeta[crypto]'") from exc
    if not isinstance(key, (bytes, bytearray)) or len(key) != 32:
        raise StateError("the state key must be 32 bytes (AES-256); e.g. os.urandom(32), kept in the OS keystore")
    return AESGCM(bytes(key))


def encode_state(state: StateData, key: bytes | None = None) -> bytes:
    """Serialise ``state`` to the file layout above."""
    meta = {**state.meta, "bundle_id": state.bundle_id, "labels": state.labels,
            "label_type": "int" if state.labels and isinstance(state.labels[0], int) else "str"}
    buf = io.BytesIO()
    arrays = {"embeddings": state.embeddings.astype(np.float32), "sample_class": state.sample_class.astype(np.int64),
              "meta": np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)}
    arrays.update({f"head.{k}": v for k, v in state.head.items()})
    np.savez(buf, **arrays)
    payload = buf.getvalue()
    encryption = "none" if key is None else "aes-256-gcm"
    if key is not None:
        nonce = os.urandom(12)
        aad = json.dumps({"format": STATE_FORMAT, "version": STATE_VERSION, "encryption": encryption}).encode()
        payload = nonce + _aesgcm(key).encrypt(nonce, payload, aad)
    header = {"format": STATE_FORMAT, "version": STATE_VERSION, "encryption": encryption,
              "payload_bytes": len(payload), "payload_sha256": hashlib.sha256(payload).hexdigest()}
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload


def decode_state(data: bytes, key: bytes | None = None, source: str = "state") -> StateData:
    """Parse and verify a state file's bytes; raises :class:`StateError` naming what is wrong."""
    if not data.startswith(MAGIC):
        raise StateError(f"{source} is not an edgemeta state file (bad magic)")
    end = data.find(b"\n", len(MAGIC))
    if end < 0:
        raise StateError(f"{source} is truncated (no header)")
    try:
        header = json.loads(data[len(MAGIC):end].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateError(f"{source}: damaged header ({exc})") from exc
    if not isinstance(header, dict):
        raise StateError(f"{source}: damaged header (not a JSON object)")
    if header.get("format") != STATE_FORMAT or header.get("version") != STATE_VERSION:
        raise StateError(f"{source}: state format {header.get('format')!r} version {header.get('version')!r} "
                         f"is not supported (this edgemeta reads {STATE_FORMAT} v{STATE_VERSION})")
    payload = data[end + 1:]
    if len(payload) != header.get("payload_bytes"):
        raise StateError(f"{source} is truncated or padded: payload is {len(payload)} bytes, header says "
                         f"{header.get('payload_bytes')}")
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise StateError(f"{source}: checksum mismatch, the file was altered or damaged")
    encryption = header.get("encryption")
    if encryption == "aes-256-gcm":
        if key is None:
            raise StateError(f"{source} is encrypted; pass the key it was saved with")
        from cryptography.exceptions import InvalidTag

        aad = json.dumps({"format": STATE_FORMAT, "version": STATE_VERSION, "encryption": "aes-256-gcm"}).encode()
        try:
            payload = _aesgcm(key).decrypt(payload[:12], payload[12:], aad)
        except InvalidTag as exc:
            raise StateError(f"{source}: wrong key (or altered ciphertext); cannot decrypt") from exc
    elif encryption != "none":
        raise StateError(f"{source}: unknown encryption {encryption!r}")
    elif key is not None:
        raise StateError(f"{source} is not encrypted but a key was given; refusing to guess")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            head = {k[5:]: z[k].copy() for k in z.files if k.startswith("head.")}
            emb, cls = z["embeddings"].copy(), z["sample_class"].copy()
        labels = [int(x) for x in meta["labels"]] if meta.get("label_type") == "int" else [str(x) for x in meta["labels"]]
        bundle_id = str(meta.pop("bundle_id"))
    except (ValueError, KeyError, OSError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise StateError(f"{source}: damaged payload ({exc!r})") from exc
    if (cls.ndim != 1 or cls.dtype.kind not in "iu" or emb.ndim != 2 or len(cls) != len(emb)
            or (len(cls) and (cls.min() < 0 or cls.max() >= len(labels)))):
        raise StateError(f"{source}: damaged payload (sample_class must be one index into labels per embedding)")
    return StateData(bundle_id, labels, emb, cls, head, meta)


def write_state(path: str | os.PathLike, state: StateData, key: bytes | None = None) -> None:
    """Write atomically, readable by this user only: a crash leaves the previous file or the new one,
    never a mix; temporaries left by earlier crashed saves (full copies of an old state, which may
    hold a class the user has since forgotten) are deleted once the new state is in place."""
    data = encode_state(state, key)
    with _WRITE_LOCK:
        atomic_write_bytes(path, data, mode=0o600)
        remove_stale_temporaries(path)


def read_state(path: str | os.PathLike, key: bytes | None = None) -> StateData:
    path = Path(path)
    if not path.is_file():
        raise StateError(f"no state file at {path}")
    return decode_state(path.read_bytes(), key, str(path))
