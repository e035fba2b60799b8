"""Workstation -> bundle -> device: a tiny Lake-split run generalises to never-seen alphabets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgemeta.evaluation import evaluate_episodes
from edgemeta.runtime import Bundle

ROOT = Path(__file__).resolve().parents[1]


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
        ways = int(k.split("w")[0])
        assert v["episodes"] == 50 and v["queries"] == 15
        assert 100.0 / ways + 20.0 < v["accuracy"] <= 100.0, (k, v)   # well above chance: a trained head
    assert m["validation"]["5w5s"]["accuracy"] > m["validation"]["5w1s"]["accuracy"] > m["validation"]["20w1s"]["accuracy"]
    p = m["provenance"]
    assert p["train_config"]["split"] == "lake" and p["seed"] == 0 and p["backbone"] == "conv4"
    assert p["train_episodes"] == p["train_config"]["max_episodes"] and p["onnx_opset"] == 17


def test_int8_export_reports_each_phase_and_writes_the_bundle_once(tmp_path, trained_run, lake_sets, monkeypatch):
    """``progress`` hears every phase start and end in order; the bundle directory is written once,
    after every measurement; the int8 gate compares int8 with the fp32 validation's own episodes."""
    import edgemeta.train.export as export

    train, val, _ = lake_sets
    writes = []
    real_write = export.write_bundle
    monkeypatch.setattr(export, "write_bundle", lambda d, m, f: writes.append((d, sorted(f))) or real_write(d, m, f))
    lines = []
    manifest = export.export_bundle(trained_run[0], tmp_path / "b", val, parity_episodes=3, metric_episodes=20,
                                    int8_calibration=train.subset(np.arange(8)), progress=lines.append)
    assert writes == [(tmp_path / "b", sorted(manifest["files"]))]
    phases = ["graphs", "parity check", "validation", "int8 calibration", "int8 gate", "open-set calibration",
              "writing"]
    assert [ln.split(" (")[0].split(":")[1].strip(" .") for ln in lines[0::2]] == phases
    for started, ended, name in zip(lines[0::2], lines[1::2], phases):
        assert started.startswith(f"export: {name}") and started.endswith("...")
        assert ended.startswith(f"export: {name}") and ended.endswith("s]") and "[" in ended
    gate = manifest["precision"]["int8"]
    assert gate["fp32_accuracy"] == manifest["validation"]["5w1s"]["accuracy"]
    assert ("backbone.int8.onnx" in manifest["files"]) == gate["passed"]
    assert manifest["open_set"]["threshold_by_shots"].keys() == {"1", "5"}
    assert_precision_follows_the_manifest(tmp_path / "b", manifest)


def assert_precision_follows_the_manifest(bundle_dir, manifest):
    """The export records both gate figures and its decision; ``auto`` loads what it decided."""
    from edgemeta.contract.bundle import read_bundle
    from edgemeta.train.quantize import default_precision

    p = manifest["precision"]
    speed = p["int8"]["speed"]
    assert p["int8_accuracy_drop"] == p["int8"]["drop"] and p["int8_speedup"] == speed["speedup"]
    assert speed["fp32_ms_per_image"] > 0 and speed["int8_ms_per_image"] > 0 and speed["batch"] == 25
    assert p["default"] == default_precision(p["int8_accuracy_drop"], p["int8_speedup"])
    has_int8 = "backbone.int8.onnx" in manifest["files"]
    assert Bundle.load(bundle_dir).precision == (p["default"] if has_int8 else "fp32")
    if not has_int8:
        return
    read, files = read_bundle(bundle_dir)
    for default in ("fp32", "int8"):
        edited = {**read, "precision": {**read["precision"], "default": default}}
        assert Bundle(edited, files, "edited").precision == default
    older = {**read, "precision": {"int8": read["precision"]["int8"]}}      # no default: int8 when present
    assert Bundle(older, files, "older").precision == "int8"
    assert Bundle(read, files, "any", precision="fp32").precision == "fp32"


def test_shipped_bundles_without_speed_figures_keep_int8_by_default():
    """Version-1 bundles exported before the speed gate load their int8 backbone under ``auto``."""
    for name in ("omniglot-conv4", "omniglot-conv4-proto"):
        path = ROOT / "models" / name
        if not (path / "manifest.json").is_file():  # pragma: no cover - shipped with the checkout
            continue
        bundle = Bundle.load(path)
        assert "int8_speedup" not in bundle.manifest["precision"] and bundle.precision == "int8"


def test_node_fixture_manifest_has_the_export_layout(bundle):
    """tools/node_fixture.py builds its untrained bundles' manifest with export's own function."""
    import importlib.util

    import torch

    from edgemeta.train.model import FewShotModel

    spec = importlib.util.spec_from_file_location("node_fixture", ROOT / "tools" / "node_fixture.py")
    node_fixture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(node_fixture)
    torch.manual_seed(0)
    m = node_fixture.untrained_manifest(FewShotModel("conv4", "proto"), "proto", (28, 28), 0, {"checked": True})
    exported = bundle.manifest
    export_only = {"validation", "open_set", "precision", "format", "format_version", "files", "integrity"}
    assert set(m) == set(exported) - export_only | {"validation", "integrity"}
    for key in ("input", "preprocess", "embedding", "graphs", "limits"):
        assert m[key] == exported[key], key
    assert m["head"].keys() == exported["head"].keys()
    assert {"code_version", "torch", "onnx_opset", "exported_at", "platform"} <= m["provenance"].keys()


def test_memoized_bundle_gives_the_runtimes_results_embedding_each_image_once(bundle_dir, lake_val):
    """Export measures on a bundle that embeds each distinct image once; onnxruntime's embedding of
    an image does not depend on its batch, so every measurement equals the plain runtime's."""
    from edgemeta.contract.bundle import read_bundle
    from edgemeta.train.memo_bundle import MemoizedBundle

    plain = Bundle.load(bundle_dir)
    x = lake_val.batch(np.arange(60))
    whole = plain.embed(x)
    assert np.array_equal(whole, np.concatenate([plain.embed(x[i:i + 7]) for i in range(0, 60, 7)]))
    manifest, files = read_bundle(bundle_dir)
    memo = MemoizedBundle(manifest, files, "memo")
    assert np.array_equal(memo.embed(x[[5, 3, 5]]), whole[[5, 3, 5]]) and memo.images_embedded == 2
    assert np.array_equal(memo.embed(x), whole) and memo.images_embedded == 60
    fresh = MemoizedBundle(manifest, files, "memo")
    a = evaluate_episodes(fresh, lake_val, 5, 1, 15, 40, seed=3)
    b = evaluate_episodes(plain, lake_val, 5, 1, 15, 40, seed=3)
    assert (a["accuracy"], a["ci95"]) == (b["accuracy"], b["ci95"])
    from edgemeta.data.episodes import EpisodeSampler

    sampler = EpisodeSampler(lake_val, 5, 1, 15, 3)
    distinct = {int(r) for e in range(40) for part in (sampler.indices(e).support, sampler.indices(e).query)
                for r in part}
    assert fresh.images_embedded == len(distinct) < 40 * 5 * 16          # each distinct image once
