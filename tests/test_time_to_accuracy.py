"""tools/time_to_accuracy.py reads the first validation that reaches a target from a run record."""

from __future__ import annotations

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("tta", Path(__file__).resolve().parents[1] / "tools" / "time_to_accuracy.py")
tta = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tta)

RECORD = {"config": {"val_ways": 5, "val_shots": 1, "val_queries": 15, "val_episodes": 600}, "device": "cpu",
          "train_seconds": 30.0,
          "history": [{"phase": "meta", "step": 250, "seconds": 10.0, "val_acc": 97.0, "val_ci95": 0.3},
                      {"phase": "meta", "step": 500, "seconds": 20.0, "val_acc": 99.1, "val_ci95": 0.2},
                      {"phase": "meta", "step": 750, "seconds": 30.0, "val_acc": 99.4, "val_ci95": 0.2}]}


def test_first_validation_at_or_above_the_target():
    r = tta.first_reaching(RECORD, 99.0)
    assert (r["reached"], r["step"], r["seconds"], r["val_acc"]) == (True, 500, 20.0, 99.1)
    assert r["val_setting"] == "5-way 1-shot 15-query, 600 episodes"


def test_target_never_reached_reports_the_best():
    r = tta.first_reaching(RECORD, 99.5)
    assert r["reached"] is False and r["best_val_acc"] == 99.4 and r["seconds_trained"] == 30.0
