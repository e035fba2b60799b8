"""When a meta-training run first reached a validation accuracy, from its ``run.json`` history.

    python tools/time_to_accuracy.py RUN_DIR [--target 99.0]

Prints one JSON object: the first validation at or above ``target`` (step, seconds of training
wall time since the run started, accuracy ± CI and the validation setting), or ``reached: false``.
Train with the validation setting the target is stated in, e.g. ``--val-ways 5 --val-shots 1``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def first_reaching(record: dict, target: float) -> dict:
    """The first history entry with ``val_acc >= target`` in a run record, as a small summary."""
    cfg = record["config"]
    setting = f"{cfg['val_ways']}-way {cfg['val_shots']}-shot {cfg.get('val_queries', 15)}-query, {cfg['val_episodes']} episodes"
    for h in record["history"]:
        if h["val_acc"] >= target:
            return {"reached": True, "target": target, "phase": h.get("phase", "meta"), "step": h.get("step", h.get("episode")),
                    "seconds": h["seconds"], "val_acc": round(h["val_acc"], 3), "val_ci95": round(h["val_ci95"], 3),
                    "val_setting": setting, "device": record.get("device")}
    best = max((h["val_acc"] for h in record["history"]), default=None)
    return {"reached": False, "target": target, "best_val_acc": best, "val_setting": setting,
            "seconds_trained": record.get("train_seconds"), "device": record.get("device")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--target", type=float, default=99.0)
    args = ap.parse_args()
    record = json.loads((args.run / "run.json").read_text())
    print(json.dumps({"run": str(args.run), **first_reaching(record, args.target)}))


if __name__ == "__main__":
    main()
