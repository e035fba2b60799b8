"""Peak memory and time of the colour preprocessing (``preprocess`` with a colour spec) on one large
photo, each case in its own process: uint8 RGB, uint8 RGBA and float32 RGBA, SIDExSIDE, to 84x84.

The figure is the peak RSS during ``preprocess`` above the RSS once the input exists (VmHWM reset
first, Linux). A whole-image float64 copy would add ``SIDE*SIDE*C*8`` bytes; the slabs keep it to tens of MB.

    OMP_NUM_THREADS=1 python tools/colour_input_memory.py --side 6000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CASES = ("rgb", "rgba", "float-rgba")

_CHILD = """
import json, sys, time
from pathlib import Path
import numpy as np
from edgemeta.contract.preprocess import colour_spec, preprocess

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field)

kind, side = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
if kind == "float-rgba":
    x = np.empty((side, side, 4), np.float32)
    for i in range(0, side, 256):
        x[i:i + 256] = rng.random((min(256, side - i), side, 4), dtype=np.float32)
else:
    x = rng.integers(0, 256, (side, side, 4 if kind == "rgba" else 3), dtype=np.uint8)
preprocess([x[:84, :84]], colour_spec((84, 84)))              # imports and first-call allocations
Path("/proc/self/clear_refs").write_text("5")                 # reset VmHWM to the current RSS
base = status("VmRSS")
t = time.perf_counter()
preprocess([x], colour_spec((84, 84)))
print(json.dumps({"case": kind, "side": side, "input_mb": round(x.nbytes / 2**20, 1),
                  "peak_growth_mb": round(status("VmHWM") - base, 1), "seconds": round(time.perf_counter() - t, 3)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=6000)
    args = ap.parse_args()
    for kind in CASES:
        out = subprocess.run([sys.executable, "-c", _CHILD, kind, str(args.side)], capture_output=True, text=True,
                             check=True)
        print(json.dumps(json.loads(out.stdout.strip().splitlines()[-1])))


if __name__ == "__main__":
    main()
