"""fp32 vs int8 backbone speed of a bundle, side by side in one process, one thread.

    python tools/int8_speed.py models/omniglot-conv4                 # the bundle's own backbone.int8.onnx
    python tools/int8_speed.py models/omniglot-conv4 --requantise    # re-quantise backbone.onnx as export now does
    python tools/int8_speed.py models/omniglot-conv4 --both --rounds 41
    python tools/int8_speed.py models/omniglot-conv4 --both --accuracy 600   # + the export's accuracy gate

Prints ms per image at batch 1 and 25 for each graph and the speedup (fp32 time / int8 time):
both sessions are timed in interleaved rounds (order alternating), each timing the fastest of a
few back-to-back runs, and the figure is the median of the per-round ratios with its quartiles
(:func:`edgemeta.train.quantize.measure_speedup`, the export's own measurement). Images are
Omniglot validation images when ``$EDGEMETA_OMNIGLOT`` or ``../shared/data/omniglot`` is present,
else seeded random sparse strokes; ``--requantise`` calibrates on 1024 Omniglot meta-training images
(it needs the data). ``--accuracy N`` also runs the export's accuracy gate for each int8 graph: 5-way
1-shot 15-query accuracy on N Omniglot validation episodes (seed 29, as export), fp32 and int8 on the
same episodes. Nothing in the bundle is written. A machine under other load gives noisy
absolute figures; the ratio, measured side by side, is the number to read.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _images(n: int, shape: tuple[int, ...], root: str | None) -> tuple[np.ndarray, str]:
    try:
        from edgemeta.data.omniglot import load_omniglot

        val = load_omniglot("vinyals", "val", root)
        if tuple(val.batch([0]).shape[1:]) == shape:
            return val.batch(np.arange(n)), "Omniglot validation images"
    except (OSError, ValueError, ImportError):
        pass
    return (np.random.default_rng(0).random((n, *shape)) < 0.2).astype(np.float32), "random sparse images"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--requantise", action="store_true", help="re-quantise backbone.onnx with today's settings")
    ap.add_argument("--both", action="store_true", help="the shipped int8 graph and a re-quantised one")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--accuracy", type=int, default=0, metavar="EPISODES",
                    help="also measure 5w1s validation accuracy, fp32 vs int8, on this many episodes")
    ap.add_argument("--omniglot", default=None, metavar="PATH",
                    help="Omniglot folder (default: $EDGEMETA_OMNIGLOT, ../shared/data/omniglot)")
    a = ap.parse_args(argv)
    if a.requantise or a.both or a.accuracy:
        problem = _omniglot_problem(a.omniglot)
        if problem:
            print(f"error: --requantise, --both and --accuracy need Omniglot: {problem}", file=sys.stderr)
            return 2
    from edgemeta.contract.bundle import read_bundle
    from edgemeta.train.quantize import measure_speedup

    manifest, files = read_bundle(a.bundle)
    fp32 = files[manifest["graphs"]["backbone"]]
    shape = tuple(manifest["input"]["shape"][1:])
    graphs: dict[str, bytes] = {}
    if not a.requantise or a.both:
        name = manifest["graphs"].get("backbone_int8")
        if name is None:
            print(f"{a.bundle} has no int8 backbone; use --requantise", file=sys.stderr)
            return 2
        graphs["bundle's backbone.int8.onnx"] = files[name]
    if a.requantise or a.both:
        from edgemeta.data.omniglot import load_omniglot
        from edgemeta.train.quantize import quantize_backbone

        graphs["re-quantised backbone.onnx"] = quantize_backbone(fp32, load_omniglot("vinyals", "train", a.omniglot))
    images, what = _images(25, shape, a.omniglot)
    print(f"{a.bundle}: {what}, 1 intra-op thread, {a.rounds} interleaved rounds per figure")
    for label, int8 in graphs.items():
        for batch in (1, 25):
            s = measure_speedup(fp32, int8, images[:batch], rounds=a.rounds)
            lo, hi = s["speedup_quartiles"]
            print(f"  {label:28s} batch {batch:2d}: fp32 {s['fp32_ms_per_image']:.4f} ms/image, int8 "
                  f"{s['int8_ms_per_image']:.4f} ms/image, speedup {s['speedup']:.2f}x (quartiles {lo:.2f}-{hi:.2f}, "
                  f"fastest of {s['runs_per_timing']} runs per timing)")
    if a.accuracy:
        _accuracy(manifest, files, graphs, a.accuracy, a.omniglot)
    return 0


def _omniglot_problem(root: str | None) -> str | None:
    """Why Omniglot cannot be read from ``root`` (None: the usual search), or None when it can."""
    from edgemeta.data.omniglot import FILES, default_root

    try:
        folder = Path(root) if root else default_root()
    except FileNotFoundError as err:
        return str(err)
    missing = [f for f in FILES if not (folder / f).is_file()]
    return f"{folder} has no {', '.join(missing)}" if missing else None


def _accuracy(manifest: dict, files: dict[str, bytes], graphs: dict[str, bytes], episodes: int,
              root: str | None) -> None:
    """The export's accuracy gate (same validation episodes for fp32 and int8) for each int8 graph."""
    from edgemeta.data.omniglot import load_omniglot
    from edgemeta.evaluation import evaluate_episodes
    from edgemeta.train.memo_bundle import MemoizedBundle
    from edgemeta.train.quantize import MAX_DROP

    val = load_omniglot("vinyals", "val", root)
    fp32 = evaluate_episodes(MemoizedBundle(manifest, files, "fp32", precision="fp32"), val, 5, 1, 15, episodes,
                             seed=29)
    for label, int8 in graphs.items():
        bundle = MemoizedBundle(manifest, {**files, manifest["graphs"].get("backbone_int8", "backbone.int8.onnx"): int8},
                                label, precision="int8")
        r = evaluate_episodes(bundle, val, 5, 1, 15, episodes, seed=29)
        drop = fp32["accuracy"] - r["accuracy"]
        print(f"  {label:28s} 5w1s on {episodes} validation episodes: fp32 {fp32['accuracy']:.3f} %, int8 "
              f"{r['accuracy']:.3f} %, drop {drop:.3f} points (gate: at most {MAX_DROP})")


if __name__ == "__main__":
    raise SystemExit(main())
