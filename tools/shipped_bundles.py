"""One table of every shipped bundle, measured in one run: accuracy and cost on this machine.

For each bundle folder under ``models/`` (or the ones named):

- accuracy (Omniglot bundles): through the device runtime (``FewShotClassifier.fit`` then
  ``predict``, the bundle's default precision), N-way K-shot 15-query episodes, ``--episodes``
  each (seed 0, as ``edgemeta eval``), mean ± 95% CI, on the test classes of the bundle's own
  split, rotated (1,692 classes for Vinyals, the literature's protocol) and unrotated (423);
  each test image is embedded once (:class:`edgemeta.train.memo_bundle.MemoizedBundle`, which
  changes no result);
- cost: backbone ms per image at batch 25, fp32 and int8, one thread (median of ``--repeats``,
  process CPU time; wall time in the JSON); adapt 5-way 5-shot from raw images, embedding
  included (default precision); cold start and peak RSS of a fresh process that imports the
  runtime, loads and verifies the bundle, fits 5 classes and answers one image
  (``tools/cold_start.py``'s process; bytecode cached, as an installed package runs).

Colour bundles get the cost columns (their test photos are not Omniglot); bundles that are not image
classifiers (regression, vector inputs) are listed as skipped. Prints Markdown tables (the README's
"Shipped bundles" tables are this output) and, with ``--json``, writes every figure::

    python tools/shipped_bundles.py --episodes 1000 --json shipped.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

SETTINGS = ((5, 1), (5, 5), (20, 1), (20, 5))
QUERIES = 15
BATCH = 25


def kind(manifest: dict[str, Any]) -> str:
    """``grey``, ``colour`` or ``skip`` (not an image classifier)."""
    if "regression" in manifest or "vector_input" in manifest or "classify" not in manifest.get("graphs", {}):
        return "skip"
    return "colour" if int(manifest["preprocess"].get("channels", 1)) == 3 else "grey"


def cpu_ms(fn: Any, repeats: int, warmup: int = 3) -> tuple[float, float]:
    """Median ``(cpu_ms, wall_ms)`` of ``fn()`` over ``repeats`` runs after ``warmup`` (the benchmarks' timer)."""
    from bench.common import timeit

    t = timeit(fn, warmup=warmup, repeat=repeats)
    return t["ms"], t["wall"]["median"]


def accuracy(path: Path, episodes: int, omniglot: str | None) -> dict[str, Any]:
    """Rotated and unrotated test accuracy of an Omniglot bundle, every setting of :data:`SETTINGS`."""
    from edgemeta.contract.bundle import read_bundle
    from edgemeta.data.sources import evaluation_set
    from edgemeta.evaluation import evaluate_episodes
    from edgemeta.train.memo_bundle import MemoizedBundle

    manifest, files = read_bundle(path)
    bundle = MemoizedBundle(manifest, files, str(path))
    out: dict[str, Any] = {"precision": bundle.precision}
    for rotations in (True, False):
        test, name = evaluation_set(manifest["provenance"], bundle.preprocess_spec, None, omniglot,
                                    rotations=rotations)
        key = "rotated" if rotations else "unrotated"
        out[key] = {"split": name, "classes": test.n_classes}
        for ways, shots in SETTINGS:
            r = evaluate_episodes(bundle, test, ways, shots, QUERIES, episodes, seed=0)
            out[key][f"{ways}w{shots}s"] = [r["accuracy"], r["ci95"]]
    out["images_embedded"] = bundle.images_embedded
    return out


def costs(path: Path, repeats: int, cold_runs: int, pycache: str) -> dict[str, Any]:
    """Backbone ms per image (batch 25, fp32 / int8), adapt 5w5s ms, cold start and peak RSS."""
    import cold_start

    from edgemeta.runtime import Bundle, FewShotClassifier

    probe = Bundle.load(path)
    size = [int(v) for v in probe.preprocess_spec["size"]]
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"default_precision": probe.precision, "embed_ms_per_image": {}, "embed_wall_ms_per_image": {}}
    x = rng.random((BATCH, probe.channels, *size), dtype=np.float32)
    for precision in ("fp32", "int8"):
        if precision == "int8" and "backbone_int8" not in probe.manifest["graphs"]:
            continue
        b = Bundle.load(path, threads=1, precision=precision)
        c, w = cpu_ms(lambda b=b: b.embed(x), repeats)
        out["embed_ms_per_image"][precision] = round(c / BATCH, 4)
        out["embed_wall_ms_per_image"][precision] = round(w / BATCH, 4)
    clf = FewShotClassifier(probe)
    shape = (25, *size) if probe.channels == 1 else (25, *size, 3)
    imgs = rng.random(shape, dtype=np.float32) if probe.channels == 1 else rng.integers(0, 256, shape, dtype=np.uint8)
    labels = np.repeat(np.arange(5), 5)
    c, w = cpu_ms(lambda: clf.fit(imgs, labels), max(5, repeats // 2))
    out["adapt_5w5s_ms"], out["adapt_5w5s_wall_ms"] = round(c, 3), round(w, 3)
    runs = [cold_start.one_run(str(path.resolve()), "auto", None, pycache) for _ in range(cold_runs + 1)][1:]
    out["cold_start_ms"] = round(statistics.median(r["total"][1] for r in runs), 1)
    out["cold_start_wall_ms"] = round(statistics.median(r["total"][0] for r in runs), 1)
    out["peak_rss_mb"] = round(statistics.median(r["peak_rss_mb"] for r in runs), 1)
    out["bytes_on_disk"] = sum(f["bytes"] for f in probe.manifest["files"].values())
    return out


def describe(manifest: dict[str, Any]) -> dict[str, Any]:
    views = manifest["embedding"].get("shift_views") or [[0, 0]]
    return {"format_version": manifest["format_version"], "method": manifest["method"],
            "dim": manifest["embedding"]["dim"], "views": len(views),
            "input": "x".join(str(v) for v in manifest["input"]["shape"][1:])}


def markdown(rows: dict[str, dict[str, Any]]) -> str:
    """The two README tables: accuracy (default precision) and cost."""
    head = " / ".join(f"{w}w{s}s" for w, s in SETTINGS)
    lines = [f"| bundle | views, dim | precision | rotated, 1,692 test classes: {head} | "
             f"unrotated, 423: {head} |", "| --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        a = r.get("accuracy")
        if a is None:
            continue
        cell = {k: " / ".join(f"{a[k][f'{w}w{s}s'][0]:.2f} ± {a[k][f'{w}w{s}s'][1]:.2f}" for w, s in SETTINGS)
                for k in ("rotated", "unrotated")}
        lines.append(f"| `{name}` | {r['views']}, {r['dim']}-d | {a['precision']} | {cell['rotated']} | "
                     f"{cell['unrotated']} |")
    if len(lines) == 2:
        lines = []                              # no Omniglot bundle measured: the cost table alone
    lines += ["", "| bundle | format | input | ms / image fp32 | ms / image int8 | default | adapt 5w5s ms | "
                  "peak RSS MB | cold start ms | on disk |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        c = r.get("costs")
        if c is None:
            lines.append(f"| `{name}` | v{r['format_version']} | {r['input']} | {r['skipped']} | | | | | | |")
            continue
        e = c["embed_ms_per_image"]
        int8 = f"{e['int8']:.3f}" if "int8" in e else "-"
        lines.append(f"| `{name}` | v{r['format_version']} | {r['input']} | {e['fp32']:.3f} | {int8} | "
                     f"{c['default_precision']} | {c['adapt_5w5s_ms']:.2f} | {c['peak_rss_mb']:.1f} | "
                     f"{c['cold_start_ms']:.0f} | {c['bytes_on_disk'] / 1e6:.2f} MB |")
    return "\n".join(lines).strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="*", type=Path, help="bundle folders (default: every one under models/)")
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=50, help="timed runs per speed figure")
    ap.add_argument("--cold-runs", type=int, default=9, help="fresh processes per cold-start figure")
    ap.add_argument("--omniglot", default=None, help="Omniglot folder (default: the usual places)")
    ap.add_argument("--no-accuracy", action="store_true", help="cost columns only")
    ap.add_argument("--json", type=Path, help="also write every figure here")
    a = ap.parse_args()
    from edgemeta.contract.bundle import read_bundle
    from edgemeta.data.omniglot import default_root

    paths = a.bundles or sorted(p for p in (ROOT / "models").iterdir() if (p / "manifest.json").is_file())
    try:
        omniglot = a.omniglot or str(default_root())
    except FileNotFoundError:
        omniglot = None
    rows: dict[str, dict[str, Any]] = {}
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="edgemeta-shipped-") as pycache:
        for path in paths:
            manifest, _ = read_bundle(path)
            name = path.name
            row = {**describe(manifest), "kind": kind(manifest)}
            print(f"{name}: {row['kind']}, {row['views']} view(s), {row['dim']}-d ...", file=sys.stderr, flush=True)
            if row["kind"] == "skip":
                row["skipped"] = "not an image classifier"
            else:
                row["costs"] = costs(path, a.repeats, a.cold_runs, pycache)
                if row["kind"] == "grey" and manifest["provenance"].get("dataset") == "omniglot" and not a.no_accuracy:
                    if omniglot is None:
                        row["accuracy_skipped"] = "Omniglot not found"
                    else:
                        t0 = time.perf_counter()
                        row["accuracy"] = accuracy(path, a.episodes, omniglot)
                        row["accuracy"]["seconds"] = round(time.perf_counter() - t0, 1)
            rows[name] = row
            print(json.dumps({name: row}), file=sys.stderr, flush=True)
    from edgemeta.bench import cpu_name

    machine = {"cpu": cpu_name(), "cores": os.cpu_count(), "python": sys.version.split()[0]}
    import onnxruntime

    machine["onnxruntime"] = onnxruntime.__version__
    result = {"started": started, "episodes": a.episodes, "queries": QUERIES, "batch": BATCH, "machine": machine,
              "bundles": rows}
    if a.json:
        a.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"Measured {started} on {machine['cpu']} ({machine['cores']} cores, one thread), onnxruntime "
          f"{machine['onnxruntime']}; accuracy: {a.episodes} episodes per cell, {QUERIES} queries per class, seed 0; "
          f"times: process CPU ms, medians\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
