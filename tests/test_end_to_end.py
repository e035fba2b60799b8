"""Workstation -> bundle -> device: a tiny Lake-split run generalises to never-seen alphabets."""

from __future__ import annotations

from edgemeta.evaluation import evaluate_episodes
from edgemeta.runtime import Bundle


def test_tiny_run_record(trained_run):
    run_dir, record = trained_run
    assert (run_dir / "best.npz").is_file() and (run_dir / "run.json").is_file()
    cfg = record["config"]
    assert record["episodes"] == cfg["max_episodes"]
    assert [h["step"] for h in record["history"]] == list(range(cfg["val_every"], cfg["max_episodes"] + 1,
                                                                cfg["val_every"]))
    assert record["best"]["val_acc"] == max(h["val_acc"] for h in record["history"])
    assert record["provenance"]["split"] == "lake" and record["provenance"]["train_classes"] == 3168
    # learning happened: validation accuracy well above 5-way chance and improving over the run
    assert record["best"]["val_acc"] > 70.0
    assert record["history"][-1]["train_loss"] < record["history"][0]["train_loss"]


def test_never_seen_alphabets_5way_1shot(bundle, lake_test):
    """Chance is 20 %; this tiny run reaches about 88-90 % on the Lake evaluation alphabets."""
    res = evaluate_episodes(bundle, lake_test, ways=5, shots=1, queries=15, episodes=100, seed=0)
    assert (res["ways"], res["shots"], res["queries"], res["episodes"]) == (5, 1, 15, 100)
    assert res["classes"] == 659
    assert res["accuracy"] > 75.0
    assert 0.0 < res["ci95"] < 5.0


def test_never_seen_alphabets_20way_and_5shot(bundle, lake_test):
    r20 = evaluate_episodes(bundle, lake_test, ways=20, shots=1, queries=5, episodes=30, seed=1)
    assert r20["accuracy"] > 50.0                               # chance 5 %; about 70 % measured
    r5 = evaluate_episodes(bundle, lake_test, ways=5, shots=5, queries=15, episodes=50, seed=1)
    r1 = evaluate_episodes(bundle, lake_test, ways=5, shots=1, queries=15, episodes=50, seed=1)
    assert r5["accuracy"] > r1["accuracy"]                      # more shots help
    assert r5["accuracy"] > 90.0


def test_evaluation_is_reproducible(bundle, lake_test):
    a = evaluate_episodes(bundle, lake_test, 5, 1, 15, 10, seed=3)
    b = evaluate_episodes(bundle, lake_test, 5, 1, 15, 10, seed=3)
    c = evaluate_episodes(bundle, lake_test, 5, 1, 15, 10, seed=4)
    assert a["accuracy"] == b["accuracy"] and a["ci95"] == b["ci95"]
    assert (a["accuracy"], a["ci95"]) != (c["accuracy"], c["ci95"])


def test_untrained_model_is_much_worse(tmp_path, bundle, lake_val, lake_test, trained_run):
    """The accuracy comes from meta-training: the same export of untrained weights is far below it."""
    import shutil

    import torch

    from edgemeta.train.checkpoint import save_weights
    from edgemeta.train.export import export_bundle
    from edgemeta.train.model import FewShotModel

    run = tmp_path / "untrained"
    shutil.copytree(trained_run[0], run)
    torch.manual_seed(0)
    save_weights(run / "best.npz", FewShotModel("conv4", "proto").state_dict())
    export_bundle(run, tmp_path / "b", lake_val, parity_episodes=3, metric_episodes=5)
    untrained = evaluate_episodes(Bundle.load(tmp_path / "b"), lake_test, 5, 1, 15, 100, seed=0)
    trained = evaluate_episodes(bundle, lake_test, 5, 1, 15, 100, seed=0)
    assert trained["accuracy"] > untrained["accuracy"] + 20.0    # measured: ~88 vs ~53


def test_manifest_records_validation_not_test(bundle):
    m = bundle.manifest
    assert m["validation"]["split"].startswith("val")
    for k in ("5w1s", "5w5s", "20w1s"):
        v = m["validation"][k]
        assert v["episodes"] == 50 and v["queries"] == 15 and 0 < v["accuracy"] <= 100
    assert m["validation"]["5w5s"]["accuracy"] > m["validation"]["5w1s"]["accuracy"] > m["validation"]["20w1s"]["accuracy"]
    p = m["provenance"]
    assert p["train_config"]["split"] == "lake" and p["seed"] == 0 and p["backbone"] == "conv4"
    assert p["train_episodes"] == p["train_config"]["max_episodes"] and p["onnx_opset"] == 17
