"""Property fuzz of the colour rule: ``preprocess(images, colour_spec((84, 84)))`` on random arrays.

    python tools/fuzz/array_fuzz.py --cases 400 --seed 0 [--json]

Cases: shapes 1..3000 pixels a side (aspect up to 100:1, at most 16 MB of input per image), dtypes
bool, uint8, uint16, int32, int64, float16/32/64, complex, object; channels 1 (2-D), 2, 3, 4, 5;
values with NaN, inf, below 0 or above 1; batches and lists mixing sizes and kinds. Every outcome
must be a float32 ``[N, 3, 84, 84]`` in [0, 1] or an InputError; an accepted case that the rules
refuse (wrong dtype, channels, NaN, out of range, a side under 4) or any other exception is an
escape. Up to ``--oracle`` small successes are compared exactly with the pure-Python oracle of
tests/test_colour_preprocess.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edgemeta.contract.preprocess import colour_spec, preprocess  # noqa: E402
from edgemeta.errors import InputError  # noqa: E402

SIZE = (84, 84)
DTYPES = ["bool", "uint8", "uint16", "int32", "int64", "float16", "float32", "float64", "complex64", "object"]
BYTES_PER_IMAGE = 16 << 20


def oracle_module() -> Any:
    spec = importlib.util.spec_from_file_location("colour_oracle", ROOT / "tests" / "test_colour_preprocess.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def random_image(rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """(image, must_refuse): a random array and whether the documented rules refuse it."""
    dtype = rng.choice(DTYPES) if rng.random() < 0.5 else rng.choice(["uint8", "float32", "float64"])
    channels = int(rng.choice([1, 2, 3, 4, 5])) if rng.random() < 0.4 else int(rng.choice([1, 3, 4]))
    side = int(np.exp(rng.uniform(0, np.log(3000))))
    other = int(np.clip(side * np.exp(rng.uniform(-np.log(100), np.log(100))), 1, 3000))
    h, w = (side, other) if rng.random() < 0.5 else (other, side)
    item = np.dtype(dtype if dtype != "object" else "float64").itemsize * channels
    while h * w * item > BYTES_PER_IMAGE:
        h, w = max(1, h // 2), max(1, w // 2)
    shape = (h, w) if channels == 1 else (h, w, channels)
    if dtype == "bool":
        a = rng.random(shape) > 0.5
    elif dtype in ("uint8", "uint16", "int32", "int64"):
        a = rng.integers(0, 256 if rng.random() < 0.7 else 70000, shape).astype(dtype)
    else:
        a = rng.random(shape)
        if rng.random() < 0.15:
            a.flat[rng.integers(a.size)] = rng.choice([np.nan, np.inf, -np.inf, -0.1, 1.5, 255.0])
        a = a.astype(dtype)
    if a.ndim == 3 and a.shape[0] == 1:           # the rules read [1, H, W] as one grey image
        h, w, channels = a.shape[1], a.shape[2], 1
        a = a[0] if rng.random() < 0.5 else a
    bad_values = a.dtype.kind == "f" and not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1)
    must_refuse = (dtype not in ("uint8", "float16", "float32", "float64") and not (dtype == "bool" and channels == 1)) \
        or channels in (2, 5) or min(h, w) < 4 or bad_values
    return a, must_refuse


def check_output(out: Any, n: int) -> str:
    """'' when ``out`` is a float32 ``[n, 3, 84, 84]`` in [0, 1], else what is wrong."""
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != (n, 3, *SIZE):
        return f"got {type(out).__name__} {getattr(out, 'dtype', '')} {getattr(out, 'shape', '')}"
    if not (np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1):
        return f"values in [{out.min()}, {out.max()}]"
    return ""


def run(cases: int, seed: int, oracle_budget: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    oracle = oracle_module()
    spec = colour_spec(SIZE)
    counts: Counter = Counter()
    escaped: list[dict[str, str]] = []
    compared = 0
    for i in range(cases):
        n = int(rng.choice([1, 1, 2, 3]))
        made = [random_image(rng) for _ in range(n)]
        images: Any = [a for a, _ in made]
        if n > 1 and rng.random() < 0.3 and all(a.shape == images[0].shape and a.dtype == images[0].dtype
                                                for a in images):
            images = np.stack(images)
        elif n == 1 and rng.random() < 0.5:
            images = images[0][None]
        must_refuse = any(r for _, r in made)
        desc = "; ".join(f"{a.dtype} {a.shape}" for a, _ in made)
        try:
            out = preprocess(images, spec)
        except InputError:
            counts["refused"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 - counting what escapes is the point
            escaped.append({"case": desc, "error": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        wrong = "accepted although the rules refuse it" if must_refuse else check_output(out, n)
        if not wrong and compared < oracle_budget and all(a.size <= 60000 for a, _ in made):
            for k, (a, _) in enumerate(made):
                if not np.array_equal(out[k], oracle.oracle_preprocess(a[0] if a.ndim == 3 and a.shape[0] == 1 else a,
                                                                       SIZE)):
                    wrong = f"image {k} differs from the oracle"
            compared += 1
        if wrong:
            escaped.append({"case": desc, "error": wrong})
        else:
            counts["correct"] += 1
    return {"cases": cases, "seed": seed, "correct": counts["correct"], "refused": counts["refused"],
            "escaped": len(escaped), "oracle_compared": compared, "escaped_examples": escaped[:20]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--oracle", type=int, default=20, help="small successes compared with the oracle")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    res = run(args.cases, args.seed, args.oracle)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"colour arrays: {res['cases']} cases (seed {res['seed']})")
        print(f"  correct  {res['correct']:5d}   (float32 [N, 3, 84, 84] in [0, 1]; "
              f"{res['oracle_compared']} compared with the oracle, all equal)")
        print(f"  refused  {res['refused']:5d}   (InputError)")
        print(f"  escaped  {res['escaped']:5d}   (other exception, wrong output, or accepted against the rules)")
        for e in res["escaped_examples"]:
            print(f"  ESCAPED {e['case']}: {e['error']}")
    return 1 if res["escaped"] else 0


if __name__ == "__main__":
    sys.exit(main())
