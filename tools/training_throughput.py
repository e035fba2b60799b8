"""Meta-training episodes per second on this machine, 1 process and N processes (torchrun, gloo).

    python tools/training_throughput.py [--method proto] [--ways 20 --shots 5 --queries 15] [--episodes 200] [--procs 2]
    python tools/training_throughput.py --device cuda --procs 1 --episodes 2000     # one GPU (name printed)

Each run is a real `meta_train` on Omniglot (Vinyals train split) with validation only at the end on
10 validation classes (negligible); episodes/s = episodes / wall time of the training loop as the
run record reports it. One intra-op thread per process (OMP_NUM_THREADS=1), so N processes use N
cores; the single-process run is also measured with N threads for a fair comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

WORKER = """
import json, sys, time, numpy as np, torch
from edgemeta.data import load_omniglot
from edgemeta.train.trainer import TrainConfig, meta_train
a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
train = load_omniglot("vinyals", "train", a["omniglot"])
val = load_omniglot("vinyals", "val", a["omniglot"]).subset(np.arange(10))
cfg = TrainConfig(method=a["method"], ways=a["ways"], shots=a["shots"], queries=a["queries"], max_episodes=a["episodes"],
                  val_every=10**9, val_episodes=2, val_ways=5, device=a["device"], patience=10**9, amp=a["amp"])
t = time.perf_counter()
rec = meta_train(cfg, train, val, a["out"], progress=False, log=lambda s: None)
if rec.get("world_size", 1) == 1 or torch.distributed.get_rank() == 0:
    print(json.dumps({"episodes": rec["episodes"], "seconds": time.perf_counter() - t, "device": rec["device"]}))
"""


def fail(message: str) -> NoReturn:
    """Stop as the edgemeta CLI does: ``error: <what was expected>`` on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run(args: argparse.Namespace, procs: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec = {"method": args.method, "ways": args.ways, "shots": args.shots, "queries": args.queries,
                "episodes": args.episodes, "threads": threads, "out": str(Path(tmp) / "run"),
                "device": args.device, "amp": args.amp, "omniglot": args.omniglot}
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        cmd = [sys.executable, "-c", WORKER, json.dumps(spec)]
        if procs > 1:
            script = Path(tmp) / "worker.py"
            script.write_text(WORKER)
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
                   str(script), json.dumps(spec)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            fail(f"the training run failed (exit status {done.returncode}); its last output:\n"
                 + "\n".join(done.stderr.strip().splitlines()[-5:]))
        rec = json.loads(done.stdout.strip().splitlines()[-1])
    rec.update(procs=procs, threads_per_proc=threads, episodes_per_s=round(rec["episodes"] / rec["seconds"], 2))
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="proto")
    ap.add_argument("--ways", type=int, default=20)
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--queries", type=int, default=15)
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--amp", action="store_true", help="bf16 autocast")
    ap.add_argument("--omniglot", default=None, help="Omniglot folder (default: EDGEMETA_OMNIGLOT, ../shared/data/omniglot)")
    args = ap.parse_args()
    from edgemeta.data.omniglot import FILES, default_root
    root = Path(args.omniglot) if args.omniglot else None
    try:
        root = root or default_root()
    except FileNotFoundError as err:
        fail(str(err))
    missing = [f for f in FILES if not (root / f).is_file()]
    if missing:
        fail(f"{root} has no {', '.join(missing)}; expected Omniglot's background.npz and evaluation.npz")
    args.omniglot = str(root)
    rows = [run(args, 1, 1)]
    if args.procs > 1:
        if args.device == "cpu":   # N threads in one process: a fair CPU comparison; on a GPU threads do not matter
            rows.append(run(args, 1, args.procs))
        rows.append(run(args, args.procs, 1))
    for r in rows:
        print(json.dumps({"method": args.method, "episode": f"{args.ways}w{args.shots}s{args.queries}q", **r}))


if __name__ == "__main__":
    main()
