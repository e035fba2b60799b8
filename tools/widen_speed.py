"""fp32 and int8 backbone speed of widened single-view conv4 students, side by side in one process.

    python tools/widen_speed.py                                  # the default candidates
    python tools/widen_speed.py --widths 64,64,160,64 --widths 80,80,96,64 --repeats 3

Each candidate is the teacher's (``models/omniglot-conv4``) single-view student, widened
function-preserving (:func:`edgemeta.train.widen.widen_conv4`, untrained: speed does not depend on
the weights' values), exported as ``edgemeta export`` does (BatchNorm folded, ``backbone.onnx``)
and quantised as the export's int8 step does (calibrated on 1024 Omniglot meta-training images).
The present student (``64,64,64,64``) is always measured too. Every graph is timed by
:func:`edgemeta.train.quantize.measure_speedup` (one thread, fp32 and int8 interleaved) at batch
25, and the whole list is timed ``--repeats`` times in turn, so a load change on the machine shows
as a disagreement between repeats. Prints ms per image; asserts nothing. Needs Omniglot.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

DEFAULT = ["64,64,128,64", "64,64,160,64", "64,64,192,64", "64,96,128,64", "80,80,96,64"]
TEACHER = Path(__file__).resolve().parents[1] / "models" / "omniglot-conv4"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default=str(TEACHER))
    ap.add_argument("--widths", action="append", help="comma-separated four widths (repeatable)")
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--omniglot", default=None, metavar="PATH")
    a = ap.parse_args(argv)

    import numpy as np

    from edgemeta.contract.bundle import read_bundle
    from edgemeta.data.omniglot import load_omniglot
    from edgemeta.train.distill import parse_widths, student_from_teacher
    from edgemeta.train.export import graphs_from_model
    from edgemeta.train.quantize import measure_speedup, quantize_backbone
    from edgemeta.train.widen import widen_conv4

    manifest, files = read_bundle(a.teacher)
    student = student_from_teacher(manifest, files)
    narrow = student.backbone                                  # widened copies below; never modified
    train = load_omniglot("vinyals", "train", a.omniglot)
    images = load_omniglot("vinyals", "val", a.omniglot).batch(np.arange(a.batch))
    candidates = ["64,64,64,64", *[w for w in (a.widths or DEFAULT) if w != "64,64,64,64"]]
    graphs: dict[str, tuple[bytes, bytes, int]] = {}
    for spec in candidates:
        student.backbone = widen_conv4(narrow, parse_widths(spec))
        fp32 = graphs_from_model(student, tuple(manifest["input"]["shape"][1:]))["backbone.onnx"]
        params = sum(p.numel() for p in student.backbone.parameters())
        graphs[spec] = (fp32, quantize_backbone(fp32, train), params)
    print(f"teacher {a.teacher}; Omniglot validation images, batch {a.batch}, 1 intra-op thread, "
          f"{a.rounds} interleaved fp32/int8 rounds per figure, {a.repeats} passes over the list")
    for r in range(a.repeats):
        for spec, (fp32, int8, params) in graphs.items():
            s = measure_speedup(fp32, int8, images, rounds=a.rounds)
            print(f"  pass {r + 1} widths {spec:14s} ({params / 1e3:6.1f}k params): fp32 {s['fp32_ms_per_image']:.4f} "
                  f"ms/image, int8 {s['int8_ms_per_image']:.4f} ms/image, speedup {s['speedup']:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
