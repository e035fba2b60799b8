"""Export the benchmark episodes to ``build/bench/`` so every peer sees exactly the same images.

    python tools/bench/episodes.py [--test-episodes 600] [--train-episodes 40]

Main venv (edgemeta.data, numpy only). Written, one folder each, as ``.npy`` files (uint8 0/1
images, the peers memory-map them) plus ``meta.json``:

- ``test_5w5s``: Omniglot Vinyals **test** classes (423 characters, no rotations), 5-way 5-shot
  15-query, ``EpisodeSampler(seed=0)`` episodes 0..E-1: ``support_x [E,25,1,28,28]``,
  ``query_x [E,75,1,28,28]``, ``support_y [25]``, ``query_y [75]`` (class-major), ``classes [E,5]``.
  Accuracy of edgemeta and of ONNX Runtime training is measured on these.
- ``val_5w5s``: the same shape on the Vinyals **validation** classes (seed 1): used only to pick
  the ONNX Runtime training peer's optimizer and learning rate (never the test episodes).
- ``train_60w1s5q``: Vinyals **train** classes (with rotations, as edgemeta trains), 60-way 1-shot
  5-query, ``EpisodeSampler(seed=0)`` episodes 0..E-1: ``x [E,360,1,28,28]`` (60 support then 300
  query, class-major) and ``rows [E,360]`` (the same episodes as row indices into the training set,
  which is how edgemeta's trainer reads them). Meta-training throughput of both edgemeta and easyfsl
  is measured on these episodes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, emit  # noqa: E402

TEST_SEED, VAL_SEED, TRAIN_SEED = 0, 1, 0
TRAIN_SHAPE = {"ways": 60, "shots": 1, "queries": 5}


def _u8(x: np.ndarray) -> np.ndarray:
    if not np.array_equal(x, x.round()) or x.min() < 0 or x.max() > 1:
        raise ValueError("expected 0/1 images")
    return x.astype(np.uint8)


def write(name: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
    d = WORK / name
    d.mkdir(parents=True, exist_ok=True)
    for p in d.glob("*.npy"):
        p.unlink()
    for k, v in arrays.items():
        np.save(d / f"{k}.npy", v)
    (d / "meta.json").write_text(json.dumps(meta, indent=2))


def export_5w5s(name: str, part: str, seed: int, episodes: int) -> None:
    from edgemeta.data import EpisodeSampler, load_omniglot

    data = load_omniglot("vinyals", part, rotations=False)
    s = EpisodeSampler(data, 5, 5, 15, seed)
    ys, yq = s.labels()
    sx = np.empty((episodes, 25, 1, 28, 28), np.uint8)
    qx = np.empty((episodes, 75, 1, 28, 28), np.uint8)
    cls = np.empty((episodes, 5), np.int64)
    for e in range(episodes):
        ep = s.episode(e)
        sx[e], qx[e], cls[e] = _u8(ep.support_x), _u8(ep.query_x), ep.classes
    write(name, {"support_x": sx, "query_x": qx, "support_y": ys.astype(np.int64),
                 "query_y": yq.astype(np.int64), "classes": cls},
          {"split": "vinyals", "part": part, "classes_in_part": data.n_classes, "ways": 5, "shots": 5,
           "queries": 15, "seed": seed, "episodes": episodes,
           "sampler": f"edgemeta.data.EpisodeSampler(load_omniglot('vinyals', '{part}', rotations=False), 5, 5, 15, seed={seed})"})


def export_train(episodes: int) -> None:
    from edgemeta.data import EpisodeSampler, load_omniglot

    data = load_omniglot("vinyals", "train")
    s = EpisodeSampler(data, **TRAIN_SHAPE, seed=TRAIN_SEED)
    rows = s.batch_indices(0, episodes)                                  # [E, 360]
    x = _u8(data.images[rows.reshape(-1)]).reshape(episodes, rows.shape[1], 1, 28, 28)
    write("train_60w1s5q", {"x": x, "rows": rows},
          {"split": "vinyals", "part": "train (with 90/180/270 rotations)", "classes_in_part": data.n_classes,
           **TRAIN_SHAPE, "seed": TRAIN_SEED, "episodes": episodes,
           "layout": "per episode: 60 support (class-major) then 300 query (class-major)"})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--test-episodes", type=int, default=600)
    ap.add_argument("--val-episodes", type=int, default=100)
    ap.add_argument("--train-episodes", type=int, default=40)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    export_5w5s("test_5w5s", "test", TEST_SEED, a.test_episodes)
    export_5w5s("val_5w5s", "val", VAL_SEED, a.val_episodes)
    export_train(a.train_episodes)
    print(f"wrote {WORK}/{{test_5w5s,val_5w5s,train_60w1s5q}} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    emit({"episodes": {n: json.loads((WORK / n / "meta.json").read_text())
                       for n in ("test_5w5s", "val_5w5s", "train_60w1s5q")},
          "seconds": round(time.perf_counter() - t0, 2)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
