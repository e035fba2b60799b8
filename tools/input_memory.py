"""Peak memory and time of ``FewShotClassifier.predict`` on large inputs, each case in its own process.

Cases: ``array`` (N 4x4 uint8 images as one array), ``list`` (the same as a list of N arrays) and
``big`` (one SIDExSIDE uint8 image; above ``MAX_PIXELS`` it is refused, which is what is timed).
The figure is the peak RSS during ``predict`` above the RSS once the input exists (VmHWM reset first).

    OMP_NUM_THREADS=1 python tools/input_memory.py --n 1000000 --side 20000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "models" / "omniglot-conv4-proto"


def _status(field: str) -> float:
    """A /proc/self/status field in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_case(case: str, n: int, side: int, bundle: str) -> dict:
    """In this process: build the input, reset the peak, time predict; a dict of figures."""
    import numpy as np

    from edgemeta.errors import InputError
    from edgemeta.runtime import FewShotClassifier

    rng = np.random.default_rng(0)
    clf = FewShotClassifier(bundle).fit(rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), ["a", "b", "a", "b"])
    if case == "array":
        images = rng.integers(0, 256, (n, 4, 4), dtype=np.uint8)
    elif case == "list":
        images = list(rng.integers(0, 256, (n, 4, 4), dtype=np.uint8))
    else:
        images = np.zeros((1, side, side), np.uint8)
        images[0, ::97, ::89] = 255                                 # touch every page: real memory
    base = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")                   # reset VmHWM to the current RSS
    t0 = time.perf_counter()
    try:
        out = f"{len(clf.predict(images))} labels"
    except InputError as exc:
        out = f"InputError: {exc}"
    sec = time.perf_counter() - t0
    return {"case": case, "n": n if case != "big" else 1, "side": 4 if case != "big" else side,
            "input_mb": round(base, 1), "peak_over_input_mb": round(_status("VmHWM") - base, 1),
            "seconds": round(sec, 2), "result": out[:120]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="images in the array / list cases")
    ap.add_argument("--side", type=int, default=20_000, help="side of the one large image")
    ap.add_argument("--cases", default="array,list,big")
    ap.add_argument("--bundle", default=str(BUNDLE))
    ap.add_argument("--case", help=argparse.SUPPRESS)               # internal: run one case here
    a = ap.parse_args()
    if a.case:
        print(json.dumps(run_case(a.case, a.n, a.side, a.bundle)))
        return
    for case in a.cases.split(","):
        cmd = [sys.executable, __file__, "--case", case, "--n", str(a.n), "--side", str(a.side), "--bundle", a.bundle]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        print(f"{r['case']:5s} n={r['n']:>9,} {r['side']}x{r['side']} uint8: RSS with input {r['input_mb']:8.1f} MB, "
              f"peak during predict +{r['peak_over_input_mb']:7.1f} MB, {r['seconds']:7.2f} s ({r['result']})")


if __name__ == "__main__":
    main()
