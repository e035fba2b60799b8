"""Online learning cost on the device: a recurrent bundle's per-class memory against proto's embeddings.

    python tools/recurrent_bench.py --recurrent models/omniglot-conv4-recurrent --proto models/omniglot-conv4-proto

For each setting (classes held x samples per class) it fills both classifiers with the same random
embeddings (``fit_embeddings``), then times ``partial_fit`` of one more sample of a held class, the
step a device takes when the user adds one photo: proto re-adapts on every held embedding (what its
``partial_fit`` does), the recurrent bundle runs one GRU step for that class (its ``update.onnx``).
The backbone is left out (it costs the same for both; ``edgemeta bench`` measures it). It prints
the median of ``--repeats`` timings (one thread) and the saved state's size, side by side, with the
ratio proto / recurrent. Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgemeta.runtime import Bundle, FewShotClassifier  # noqa: E402

SETTINGS = ((5, 1), (5, 5), (20, 5), (20, 20), (100, 20), (100, 100))


def one_more_sample_ms(clf: FewShotClassifier, sample: np.ndarray, label: int, repeats: int) -> float:
    """Median ms of adding one embedding of class ``label`` (the classifier is restored after each)."""
    times = []
    for _ in range(repeats):
        if hasattr(clf, "_memory"):                       # recurrent: the memory update of that class
            held = clf._memory
            t0 = time.perf_counter()
            clf._commit(held.added(clf._update, sample[None], [label]))
            times.append(time.perf_counter() - t0)
            clf._commit(held)
        else:                                             # proto: re-adapt on all held embeddings + the new one
            emb, lab = clf._emb, clf._lab
            t0 = time.perf_counter()
            clf._store(np.concatenate([emb, sample[None]]), lab + [label])
            times.append(time.perf_counter() - t0)
            clf._store(emb, lab)
    return 1000 * statistics.median(times)


def state_bytes(clf: FewShotClassifier) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        clf.save(Path(tmp) / "s.state")
        return (Path(tmp) / "s.state").stat().st_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recurrent", required=True, help="a recurrent bundle")
    ap.add_argument("--proto", required=True, help="a proto bundle with the same embedding width")
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args(argv)
    rec, pro = Bundle.load(args.recurrent, threads=1), Bundle.load(args.proto, threads=1)
    print(f"recurrent {args.recurrent}: D={rec.embedding_dim}, memory H={rec.memory_update.hidden}; "
          f"proto {args.proto}: D={pro.embedding_dim}; one thread, median of {args.repeats}")
    print(f"{'classes':>7} {'shots':>5} | {'proto ms':>9} {'recur. ms':>9} {'ratio':>6} | "
          f"{'proto state B':>13} {'recur. state B':>14} {'ratio':>6}")
    g = np.random.default_rng(0)
    for ways, shots in SETTINGS:
        labels = list(np.repeat(np.arange(ways), shots))
        row = []
        for b in (pro, rec):
            emb = np.abs(g.standard_normal((ways * shots, b.embedding_dim))).astype(np.float32)
            clf = FewShotClassifier(b).fit_embeddings(emb, labels)
            sample = np.abs(g.standard_normal(b.embedding_dim)).astype(np.float32)
            row.append((one_more_sample_ms(clf, sample, 0, args.repeats), state_bytes(clf)))
        (pt, ps), (rt, rs) = row
        print(f"{ways:>7} {shots:>5} | {pt:>9.3f} {rt:>9.3f} {pt / rt:>6.1f} | {ps:>13,d} {rs:>14,d} {ps / rs:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
