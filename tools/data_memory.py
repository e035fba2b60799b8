"""Peak resident memory of the commands that load Omniglot (eval, demo, a short train); prints MB.

    python tools/data_memory.py [--skip-train]

Each command runs in a fresh process under its own small wrapper process, so its peak
(``ru_maxrss`` of the wrapper's children) is its alone. Needs ../shared/data/omniglot (or
EDGEMETA_OMNIGLOT) and the shipped models/omniglot-conv4-proto.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

WRAPPER = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
           "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def peak_mb(cmd: list[str]) -> tuple[int, float]:
    """``(exit status, peak RSS in MB)`` of ``cmd`` run to completion."""
    out = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True, check=True)
    rc, kb = out.stdout.split()
    return int(rc), int(kb) / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-train", action="store_true", help="leave out the (30 s) training run")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    edgemeta = [sys.executable, "-m", "edgemeta.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            "eval --ways 20 --shots 1 --episodes 50": [*edgemeta, "eval", "models/omniglot-conv4-proto", "--ways", "20",
                                                       "--shots", "1", "--episodes", "50"],
            "demo --no-figure": [*edgemeta, "demo", "--no-figure"],
        }
        if not args.skip_train:
            runs["train --ways 5 --episodes 20 --val-every 10 --val-episodes 5 --val-ways 5 --device cpu"] = [
                *edgemeta, "train", "--out", f"{tmp}/run", "--ways", "5", "--episodes", "20", "--val-every", "10",
                "--val-episodes", "5", "--val-ways", "5", "--device", "cpu"]
        figures = {}
        for name, cmd in runs.items():
            rc, mb = peak_mb(cmd)
            figures[name] = {"exit_status": rc, "peak_rss_mb": round(mb, 1)}
            print(f"edgemeta {name}: peak RSS {mb:.0f} MB" + ("" if rc == 0 else f" (exit status {rc})"), flush=True)
    print(json.dumps(figures))
    failed = [name for name, f in figures.items() if f["exit_status"] != 0]
    if failed:      # a failed run's peak is not the command's: say so and fail
        sys.exit(f"error: {', '.join(failed)} failed (exit status above); its peak RSS is not a measurement")


if __name__ == "__main__":
    main()
