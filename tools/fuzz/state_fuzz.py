"""Fuzz the private state reader with hostile mutants of a real saved state.

    python tools/fuzz/state_fuzz.py --mutants 500 --seed 0 [--json] [--cli 5]

The base states are real: the shipped compact bundle adapted to scikit-learn digits 0-4 (3 scans
each), saved plain and encrypted (version 2), plus a version-1 state from tests/fixtures. Each
mutant is loaded with ``FewShotClassifier.load`` and, if accepted, must predict finite
probabilities. Outcomes: ``refused`` (StateError), ``accepted`` (loaded and predicted finite
probabilities) and ``escaped`` (any other exception, or accepted with non-finite probabilities).
The goal is 0 escaped. ``--cli N`` also runs ``edgemeta predict`` on N refused mutants and counts
outputs holding a Python traceback.

Mutations: byte flips, truncations, extensions; header field mutations with the checksum
recomputed (types, ranges, unknown values, extra / missing / duplicate keys, deep nesting, huge
ints, NaN); body mutations re-checksummed and, for the encrypted base, re-encrypted with its key
(index lies about shapes and dtypes, lengths, NaN / inf embeddings, 2,000 classes, duplicate or
mixed labels, bad sample_class, unknown ink, flipped bytes); payload bombs (a version-1 npz member
deflating 1 MiB to 1 GiB, shapes claiming terabytes); zip tricks (duplicate names, encrypted
flag, non-npy members, npy headers lying about shape, object dtype, fortran order, zip in zip).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edgemeta.errors import StateError  # noqa: E402
from edgemeta.runtime import FewShotClassifier  # noqa: E402
from edgemeta.runtime.state import MAGIC, _aad  # noqa: E402

BUNDLE = ROOT / "models" / "omniglot-conv4-proto"
V1_STATE = ROOT / "tests" / "fixtures" / "v1-plain.state"
KEY = bytes(range(32))


def split(data: bytes) -> tuple[bytes, bytes]:
    """Header line bytes, payload bytes."""
    end = data.index(b"\n", len(MAGIC))
    return data[len(MAGIC):end], data[end + 1:]


def join(header: dict | bytes, payload: bytes, recompute: bool = True) -> bytes:
    if isinstance(header, dict):
        if recompute:
            header = {**header, "payload_bytes": len(payload), "payload_sha256": hashlib.sha256(payload).hexdigest()}
        header = json.dumps(header, sort_keys=True).encode()
    return MAGIC + header + b"\n" + payload


def seal(header: dict, body: bytes, key: bytes | None) -> bytes:
    """A file with this plain ``body``, encrypted like the writer does when ``key`` is given."""
    if key is not None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        body = nonce + AESGCM(key).encrypt(nonce, body, _aad(header["version"], "aes-256-gcm"))
    return join(header, body)


def v2_parts(body: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack_from("<I", body)
    return json.loads(body[4:4 + n]), body[4 + n:]


def v2_body(index: dict | bytes, data: bytes) -> bytes:
    blob = index if isinstance(index, bytes) else json.dumps(index).encode()
    return struct.pack("<I", len(blob)) + blob + data


# ---------------------------------------------------------------- mutations

def byte_level(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    kind = rng.choice(["flip", "flip", "truncate", "extend", "zero_run", "insert"])
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del b[rng.randrange(len(b)):]
    elif kind == "extend":
        b += os.urandom(rng.choice([1, 7, 4096]))
    elif kind == "zero_run":
        i = rng.randrange(len(b))
        b[i:i + rng.randint(1, 64)] = bytes(len(b[i:i + 64]))
    else:
        i = rng.randrange(len(b))
        b[i:i] = os.urandom(rng.randint(1, 16))
    return bytes(b)


HEADER_VALUES: list[Any] = [None, True, -1, 0, 1, 2, 3, 2.0, 10**30, "1", "", [], {}, "none", "aes-256-gcm",
                            "rot13", "0" * 64, "A" * 64, float("nan")]


def header_level(rng: random.Random, header: dict, payload: bytes) -> bytes:
    h = dict(header)
    kind = rng.choice(["value", "value", "drop", "extra", "duplicate", "deep", "huge_int", "long", "raw_nan"])
    if kind == "value":
        h[rng.choice(sorted(h))] = rng.choice(HEADER_VALUES)
        return join(h, payload, recompute=rng.random() < 0.5) if "payload_sha256" not in h else \
            MAGIC + json.dumps(h, sort_keys=True).encode() + b"\n" + payload
    if kind == "drop":
        del h[rng.choice(sorted(h))]
        return MAGIC + json.dumps(h).encode() + b"\n" + payload
    if kind == "extra":
        h["extra"] = rng.choice(HEADER_VALUES)
        return join(h, payload)
    line = json.dumps(h, sort_keys=True).encode()
    if kind == "duplicate":
        line = line[:-1] + b', "version": 1}'
    elif kind == "deep":
        depth = rng.choice([50, 2000, 100000])
        line = line[:-1] + b', "x": ' + b"[" * depth + b"]" * depth + b"}"
    elif kind == "huge_int":
        line = line.replace(str(h["payload_bytes"]).encode(), b"9" * rng.choice([25, 5000]))
    elif kind == "long":
        line = line[:-1] + b', "pad": "' + b"x" * rng.choice([5000, 1 << 20]) + b'"}'
    else:
        line = line.replace(b'"version": 2', b'"version": NaN')
    return MAGIC + line + b"\n" + payload


def body_v2_level(rng: random.Random, body: bytes) -> bytes:
    index, data = v2_parts(body)
    arrays = index["arrays"]
    emb = next(a for a in arrays if a["name"] == "embeddings")
    meta = index["meta"]
    kind = rng.choice(["shape", "dtype", "name", "drop_array", "index_len", "nan", "inf", "many_classes",
                       "dup_labels", "label_types", "sample_class", "ink", "meta_key", "bundle_id", "flip",
                       "trailing", "index_json", "unused_label", "huge_shape"])
    if kind == "shape":
        a = rng.choice(arrays)
        a["shape"] = rng.choice([[], [0], [-1, 64], [3, 64, 1, 1, 1], [a["shape"][0] + 1] + a["shape"][1:],
                                 ["3"], [1.5], None, [2**40, 2**40]])
    elif kind == "huge_shape":
        emb["shape"] = [2**30, 2**30 - 1]
    elif kind == "dtype":
        rng.choice(arrays)["dtype"] = rng.choice(["float64", "int64", "float32", "object", "<U10", None, "|O"])
    elif kind == "name":
        rng.choice(arrays)["name"] = rng.choice(["embeddings", "sample_class", "evil", "head.", 3, None])
    elif kind == "drop_array":
        arrays.pop(rng.randrange(len(arrays)))
    elif kind == "index_len":
        blob = json.dumps(index).encode()
        n = rng.choice([0, 3, len(blob) - 1, len(blob) + 1, 2**32 - 1])
        return struct.pack("<I", n) + blob + data
    elif kind in ("nan", "inf"):
        d = bytearray(data)
        i = rng.randrange(int(np.prod(emb["shape"])))
        d[4 * i:4 * i + 4] = np.float32(np.nan if kind == "nan" else -np.inf).tobytes()
        data = bytes(d)
    elif kind == "many_classes":
        n = rng.choice([1001, 2000])
        meta["labels"] = [f"class {i}" for i in range(n)]
        emb["shape"] = [n, emb["shape"][1]]
        rows = np.random.default_rng(0).standard_normal((n, emb["shape"][1])).astype("<f4")
        data = rows.tobytes() + np.arange(n, dtype="<i8").tobytes()
        index["arrays"] = [emb, {"name": "sample_class", "dtype": "int64", "shape": [n]}]
    elif kind == "dup_labels":
        meta["labels"][1] = meta["labels"][0]
    elif kind == "label_types":
        meta["labels"][0] = rng.choice([1, 1.5, True, None, [], {"a": 1}, 10**19, "x"])
    elif kind == "sample_class":
        off = 4 * int(np.prod(emb["shape"]))
        d = bytearray(data)
        d[off:off + 8] = np.int64(rng.choice([-1, 5, 2**62, len(meta["labels"])])).tobytes()
        data = bytes(d)
    elif kind == "ink":
        meta["ink"] = rng.choice(["sideways", "", None, 1, "HIGH", "auto", "low"])
    elif kind == "meta_key":
        meta[rng.choice(["extra", "label_type", "method"])] = rng.choice(["x", 1, None])
    elif kind == "bundle_id":
        meta["bundle_id"] = rng.choice(["0" * 64, "x", 5, None, meta["bundle_id"].upper()])
    elif kind == "flip":
        d = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
        data = bytes(d)
    elif kind == "trailing":
        data += os.urandom(rng.choice([1, 8, 256]))
    elif kind == "index_json":
        blob = json.dumps(index).encode()
        blob = rng.choice([blob[:-1] + b', "arrays": []}', b"[" * 5000 + b"]" * 5000, blob[: len(blob) // 2],
                           blob.replace(b"[", b"{", 1), b"\xff\xfe" + blob, blob.replace(b"]", b", NaN]", 1)])
        return v2_body(blob, data)
    else:
        meta["labels"] = meta["labels"] + ["never used"]
    return v2_body(index, data)


def npy(descr: str, shape: str, data: bytes, fortran: str = "False") -> bytes:
    head = "{'descr': %s, 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shape)
    head += " " * ((64 - (len(head) + 11) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head.encode("latin-1") + data


def npz(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, raw in members:
            zf.writestr(name, raw)
    return buf.getvalue()


def deflate_bomb(members: list[tuple[str, bytes]], gib: float = 1.0) -> bytes:
    """The v1 members with ``embeddings.npy`` replaced by a deflated member of ``gib`` GiB of zeros."""
    buf = io.BytesIO()
    size = int(gib * (1 << 30))
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, raw in members:
            if name != "embeddings.npy":
                zf.writestr(name, raw)
                continue
            with zf.open(name, "w", force_zip64=True) as fh:
                fh.write(npy("'<f4'", f"({size // 256}, 64)", b""))
                chunk = bytes(1 << 20)
                for _ in range(size // len(chunk)):
                    fh.write(chunk)
    return buf.getvalue()


def v1_level(rng: random.Random, members: list[tuple[str, bytes]], bomb: bytes) -> bytes:
    kind = rng.choice(["bomb", "deflated", "duplicate", "encrypted_flag", "not_npy", "npy_shape", "npy_object",
                       "npy_fortran", "zip_in_zip", "npy_huge", "drop_meta", "flip_member", "pickle", "many"])
    m = list(members)
    if kind == "bomb":
        return bomb
    if kind == "deflated":
        return npz(m, zipfile.ZIP_DEFLATED)
    if kind == "duplicate":
        with warnings.catch_warnings():          # zipfile warns about the duplicate name it writes
            warnings.simplefilter("ignore")
            return npz(m + [("embeddings.npy", npy("'<f4'", "(1, 64)", bytes(256)))])
    if kind == "encrypted_flag":
        raw = bytearray(npz(m))
        for sig in (b"PK\x03\x04", b"PK\x01\x02"):
            i = raw.find(sig)
            off = 6 if sig == b"PK\x03\x04" else 8
            raw[i + off] |= 1
        return bytes(raw)
    if kind == "not_npy":
        return npz(m + [("evil.txt", b"hello")])
    if kind == "zip_in_zip":
        return npz([("embeddings.npy", npz(m))] + m[1:])
    if kind == "drop_meta":
        return npz([x for x in m if x[0] != "meta.npy"])
    if kind == "many":
        return npz(m + [(f"head.p{i}.npy", npy("'<f4'", "(1,)", bytes(4))) for i in range(100)])
    i = next(j for j, x in enumerate(m) if x[0] == "embeddings.npy")
    raw = m[i][1]
    data = raw[raw.index(b"\n") + 1:]
    if kind == "npy_shape":
        m[i] = (m[i][0], npy("'<f4'", rng.choice(["(7, 64)", "(6, 65)", "(6,)", "(-6, 64)", "(6, 64, 1, 1, 1)"]), data))
    elif kind == "npy_object":
        m[i] = (m[i][0], npy("'|O'", "(6, 64)", data))
    elif kind == "npy_fortran":
        m[i] = (m[i][0], npy("'<f4'", "(6, 64)", data, fortran="True"))
    elif kind == "npy_huge":
        m[i] = (m[i][0], npy("'<f4'", "(1000000000000, 64)", data))
    elif kind == "pickle":
        m[i] = (m[i][0], b"\x80\x04\x95" + os.urandom(64))
    else:
        r = bytearray(raw)
        r[rng.randrange(len(r))] ^= 0xFF
        m[i] = (m[i][0], bytes(r))
    return npz(m)


# ---------------------------------------------------------------- running

def base_states(tmp: Path) -> dict[str, Any]:
    from edgemeta.demo import load_digits_images

    x, y = load_digits_images()
    rows = np.concatenate([np.flatnonzero(y == d)[:3] for d in range(5)])
    query = x[np.concatenate([np.flatnonzero(y == d)[3:5] for d in range(5)])]
    clf = FewShotClassifier(BUNDLE).fit(x[rows], [f"digit {y[i]}" for i in rows])
    clf.save(tmp / "plain.state")
    clf.save(tmp / "enc.state", key=KEY)
    v1 = V1_STATE.read_bytes()
    with zipfile.ZipFile(io.BytesIO(split(v1)[1])) as zf:
        members = [(i.filename, zf.read(i)) for i in zf.infolist()]
    v1_header = json.loads(split(v1)[0])
    return {"plain": (tmp / "plain.state").read_bytes(), "enc": (tmp / "enc.state").read_bytes(), "v1": v1,
            "v1_header": v1_header, "v1_members": members, "query": query,
            "bomb": join(v1_header, deflate_bomb(members))}


def make_mutant(rng: random.Random, base: dict[str, Any]) -> tuple[str, bytes, bytes | None]:
    """``(strategy, file bytes, key to load with)``."""
    which = rng.choice(["plain", "plain", "enc"])
    data, key = base[which], (KEY if which == "enc" else None)
    header_line, payload = split(data)
    header = json.loads(header_line)
    strategy = rng.choice(["bytes", "header", "body", "body", "body", "v1", "v1", "key"])
    if strategy == "bytes":
        return f"bytes/{which}", byte_level(rng, data), key
    if strategy == "header":
        return f"header/{which}", header_level(rng, header, payload), key
    if strategy == "key":
        return f"key/{which}", data, rng.choice([None, os.urandom(32), KEY[:16], KEY])
    if strategy == "v1":
        out = v1_level(rng, base["v1_members"], base["bomb"])
        if out is base["bomb"]:
            return "v1/bomb", out, None
        return "v1/zip", join(base["v1_header"], out), None
    if key is None:
        body = payload
    else:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        body = AESGCM(key).decrypt(payload[:12], payload[12:], _aad(2, "aes-256-gcm"))
    return f"body/{which}", seal(header, body_v2_level(rng, body), key), key


def try_one(path: Path, key: bytes | None, query: np.ndarray) -> tuple[str, str]:
    try:
        clf = FewShotClassifier.load(BUNDLE, path, key)
        if clf.classes_ is not None:
            proba = clf.predict_proba(query)
            clf.predict(query)
            if not np.isfinite(proba).all():
                return "escaped", "accepted, but predict_proba is not finite"
    except StateError as exc:
        return "refused", str(exc)[:100]
    except Exception as exc:  # noqa: BLE001 - counting what escapes is the point
        return "escaped", f"{type(exc).__name__}: {str(exc)[:200]}"
    return "accepted", ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mutants", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cli", type=int, default=0, help="also run `edgemeta predict` on this many refused mutants")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    outcomes: Counter = Counter()
    by_strategy: dict[str, Counter] = {}
    escapes: list[str] = []
    cli_runs, cli_tracebacks = 0, []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        base = base_states(tmp)
        for i in range(args.mutants):
            strategy, data, key = make_mutant(rng, base)
            path = tmp / "mutant.state"
            path.write_bytes(data)
            outcome, why = try_one(path, key, base["query"])
            outcomes[outcome] += 1
            by_strategy.setdefault(strategy, Counter())[outcome] += 1
            if outcome == "escaped":
                escapes.append(f"#{i} {strategy}: {why}")
            if outcome == "refused" and cli_runs < args.cli and key is None:
                cli_runs += 1
                img = tmp / "q.png"
                if not img.exists():
                    from PIL import Image

                    Image.fromarray((base["query"][0] * 255).astype(np.uint8)).save(img)
                keep = tmp / f"cli-{cli_runs}.state"
                keep.write_bytes(data)
                proc = subprocess.run([sys.executable, "-c", "from edgemeta.cli import main; main()", "predict",
                                       str(BUNDLE), "--state", str(keep), str(img)],
                                      capture_output=True, text=True, timeout=300, cwd=ROOT)
                if "Traceback" in proc.stdout + proc.stderr or proc.returncode == 0:
                    cli_tracebacks.append(f"#{i} {strategy}: rc={proc.returncode} {proc.stderr[-300:]}")
    result = {"mutants": args.mutants, "seed": args.seed, **{k: outcomes[k] for k in ("refused", "accepted", "escaped")},
              "by_strategy": {k: dict(v) for k, v in sorted(by_strategy.items())}, "escapes": escapes[:20],
              "cli_runs": cli_runs, "cli_tracebacks": cli_tracebacks, "seconds": round(time.perf_counter() - t0, 1)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.mutants} mutants (seed {args.seed}): refused {result['refused']}, accepted "
              f"{result['accepted']}, escaped {result['escaped']} in {result['seconds']} s")
        for k, v in result["by_strategy"].items():
            print(f"  {k:12s} {dict(v)}")
        for line in escapes[:20]:
            print("  ESCAPED", line)
        if cli_runs:
            print(f"edgemeta predict on {cli_runs} refused mutants: {len(cli_tracebacks)} printed a traceback "
                  f"or exited 0")
            for line in cli_tracebacks:
                print("  CLI", line)
    return 1 if result["escaped"] or cli_tracebacks else 0


if __name__ == "__main__":
    sys.exit(main())
