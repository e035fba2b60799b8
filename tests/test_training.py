"""Meta-training determinism, the run directory, and pickle-free checkpoints."""

from __future__ import annotations

import json
import time
import zipfile

import numpy as np

import pytest
import torch

from edgemeta.train.checkpoint import load_json, load_weights, save_json, save_weights
from edgemeta.train.export import load_run
from edgemeta.train.model import FewShotModel
from edgemeta.train.trainer import TrainConfig, meta_train, pick_device

TINY = dict(device="cpu", split="lake", ways=5, shots=1, queries=2, max_episodes=20, val_every=10,
            val_episodes=5, val_queries=5)


@pytest.fixture(scope="module")
def small_sets(lake_sets):
    """40 training classes (rotations included) and 10 validation classes: enough for 5-way episodes."""
    train, val, prov = lake_sets
    return train.subset(np.arange(0, train.n_classes, train.n_classes // 40)[:40]), val.subset(np.arange(10)), prov


def _train(tmp_path, name, sets, **overrides):
    train, val, prov = sets
    cfg = TrainConfig(**{**TINY, **overrides})
    rec = meta_train(cfg, train, val, tmp_path / name, provenance=prov, progress=False, log=lambda s: None)
    with np.load(tmp_path / name / "best.npz", allow_pickle=False) as z:
        weights = {k: z[k] for k in z.files}
    return cfg, rec, weights


def test_same_seed_same_weights_other_seed_other_weights(tmp_path, small_sets):
    _, rec_a, a = _train(tmp_path, "a", small_sets, seed=3)
    _, rec_b, b = _train(tmp_path, "b", small_sets, seed=3)
    _, _, c = _train(tmp_path, "c", small_sets, seed=4)
    assert a.keys() == b.keys() == c.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert [h["val_acc"] for h in rec_a["history"]] == [h["val_acc"] for h in rec_b["history"]]
    assert [h["train_loss"] for h in rec_a["history"]] == [h["train_loss"] for h in rec_b["history"]]
    float_keys = [k for k in a if a[k].dtype.kind == "f"]
    assert sum(not np.array_equal(a[k], c[k]) for k in float_keys) == len(float_keys)


def test_run_directory(tmp_path, small_sets):
    cfg, rec, weights = _train(tmp_path, "r", small_sets, seed=0)
    on_disk = load_json(tmp_path / "r" / "run.json")
    assert on_disk == json.loads(json.dumps(rec))
    assert TrainConfig.from_json(on_disk["config"]) == cfg
    assert [(h["phase"], h["step"]) for h in rec["history"]] == [("meta", 10), ("meta", 20)]
    best = max(rec["history"], key=lambda h: h["val_acc"])      # the first of equal bests is kept
    assert (rec["best"]["step"], rec["best"]["val_acc"]) == (best["step"], best["val_acc"])
    assert rec["best"]["val_setting"] == "5-way 1-shot 5-query, 5 episodes"
    assert rec["episodes"] == 20
    # the best checkpoint loads back into a model (strictly: every key, nothing extra)
    model, record = load_run(tmp_path / "r")
    assert record == on_disk and model.training is False
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), weights[k])


def test_episodes_per_step_batches_episodes(tmp_path, small_sets):
    _, rec, _ = _train(tmp_path, "b", small_sets, seed=0, episodes_per_step=4)
    assert rec["episodes"] == 20 and [h["step"] for h in rec["history"]] == [12, 20]


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="device must be cpu, cuda or auto, got 'tpu'"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            pick_device("cuda")
        assert pick_device("auto").type == "cpu"


def test_load_run_refuses_unfinished_runs(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="is not a finished run"):
        load_run(tmp_path)


def test_checkpoint_roundtrip_without_pickle(tmp_path):
    torch.manual_seed(0)
    model = FewShotModel("conv4", "proto")
    model.train()
    with torch.no_grad():
        model.backbone(torch.rand(8, 1, 28, 28))       # num_batches_tracked (int64) becomes 1
    state = model.state_dict()
    path = tmp_path / "w.npz"
    save_weights(path, state)
    # plain .npy members only, readable with pickle disabled
    with zipfile.ZipFile(path) as zf:
        assert all(n.endswith(".npy") for n in zf.namelist())
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == set(state)
        for k in z.files:
            assert z[k].dtype != object
            np.testing.assert_array_equal(z[k], state[k].numpy())
    loaded = load_weights(path)
    assert set(loaded) == set(state)
    for k, v in state.items():
        assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape
        assert torch.equal(loaded[k], v)
    other = FewShotModel("conv4", "proto")
    other.load_state_dict(loaded)                        # strict
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(other.eval().backbone(x), model.eval().backbone(x), rtol=0, atol=0)
    # the loaded tensors own their memory (no view into a closed file)
    loaded["method.log_scale"].add_(1.0)
    assert not torch.equal(loaded["method.log_scale"], state["method.log_scale"])


def test_json_roundtrip(tmp_path):
    obj = {"a": [1, 2.5, None], "b": {"c": "d"}}
    save_json(tmp_path / "x.json", obj)
    assert load_json(tmp_path / "x.json") == obj
    save_json(tmp_path / "x.json", {"replaced": True})
    assert load_json(tmp_path / "x.json") == {"replaced": True}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]          # atomic: no temp file left


# ---- one registry of rules: constructor defaults, train defaults and CLI help from one entry ----------

def test_registry_entry_builds_each_rule_with_its_defaults():
    import inspect

    from edgemeta.errors import InputError
    from edgemeta.train.method_specs import METHOD_SPECS, describe, method_spec, train_defaults
    from edgemeta.train.methods import METHODS, build_method

    assert METHODS.keys() == METHOD_SPECS.keys()
    for name, cls in METHODS.items():
        spec = method_spec(name)
        # the spec's defaults are the constructor's own defaults, so the two cannot drift apart
        params = inspect.signature(cls).parameters
        assert {k: params[k].default for k in spec.method_kwargs} == dict(spec.method_kwargs), name
        built = build_method(name, 16)
        assert type(built) is cls and built.name == name
        assert TrainConfig.for_method(name).method_kwargs == dict(spec.method_kwargs)
        assert describe().count(f"\n{name}: ") + describe().startswith(f"{name}: ") == 1
    assert build_method("metasgd", 16).steps == 3 and build_method("metasgd", 16, steps=5).steps == 5
    with pytest.raises(InputError, match=r"method 'recurrent' has no settings \['hiddenx'\]; its --method-kwargs are"):
        build_method("recurrent", 16, hiddenx=8)
    assert build_method("metasgd", 16).lr_weight.shape == (3, 16)
    assert train_defaults("finetune") == {"pretrain_steps": 20_000, "max_episodes": 0,
                                          "method_kwargs": {"steps": 100, "lr": 0.1}}
    cfg = TrainConfig.for_method("finetune", pretrain_steps=7, method_kwargs={"steps": 4})
    assert (cfg.pretrain_steps, cfg.max_episodes, cfg.method_kwargs) == (7, 0, {"steps": 4, "lr": 0.1})
    assert "finetune: " in describe() and "pretrain_steps=20000" in describe()
    with pytest.raises(InputError, match=r"unknown method 'maml'; known methods: \['finetune', 'metasgd'"):
        build_method("maml", 16)
    with pytest.raises(InputError, match="unknown method"):
        TrainConfig.for_method("maml")


def test_registry_keeps_the_head_manifest_of_existing_runs():
    """A run recorded before the registry (explicit method_kwargs, or none) builds the same head."""
    from edgemeta.train.methods import build_method

    expected = {
        "proto": {"distance": "squared_euclidean", "scale": 1.0},
        "metasgd": {"init": "prototypes", "steps": 3, "scale": 1.0, "lr_weight_mean_per_step": [0.1] * 3,
                    "lr_bias_per_step": [0.1] * 3},
        "ridge": {"solver": "newton-schulz x40", "lambda": 1.05, "alpha": 10.0, "beta": 0.0,
                  "feature_scale": "1/sqrt(16)"},
        "finetune": {"init": "zeros", "steps": 100, "lr": 0.1, "feature_scale": 10.0,
                     "features": "l2-normalised x feature_scale"},
    }
    rounded = lambda v: round(v, 6) if isinstance(v, float) else [rounded(x) for x in v] if isinstance(v, list) \
        else v  # noqa: E731 (float32 scalars)
    for name, hp in expected.items():
        for kwargs in ({}, TrainConfig.for_method(name).method_kwargs):
            assert {k: rounded(v) for k, v in build_method(name, 16, **kwargs).hparams().items()} == hp, name


# ---- public hooks: every step and validation reported, training unchanged ----------------------------

def test_hooks_report_each_step_and_validation_without_changing_training(tmp_path, small_sets):
    from edgemeta.train.trainer import TrainHooks

    train, val, prov = small_sets
    cfg = TrainConfig(**{**TINY, "pretrain_steps": 4, "pretrain_batch": 8, "val_every": 10})
    steps, rows = [], []
    hooks = TrainHooks(on_step=lambda phase, done, wall, cpu: steps.append((phase, done, wall, cpu)),
                       on_validate=rows.append)
    t0 = time.perf_counter()
    rec = meta_train(cfg, train, val, tmp_path / "h", progress=False, log=lambda s: None, hooks=hooks)
    elapsed = time.perf_counter() - t0
    assert [(p, d) for p, d, _, _ in steps] == [("pretrain", i) for i in range(1, 5)] + \
        [("meta", i) for i in range(1, 21)]
    assert sum(wall for _, _, wall, _ in steps) <= elapsed            # per-step walls fit inside the run
    assert all(cpu >= 0 for _, _, _, cpu in steps)
    assert rows == rec["history"] and [(r["phase"], r["step"]) for r in rows] == \
        [("pretrain", 4), ("meta", 10), ("meta", 20)]
    plain = meta_train(cfg, train, val, tmp_path / "p", progress=False, log=lambda s: None)
    assert [h["val_acc"] for h in plain["history"]] == [h["val_acc"] for h in rec["history"]]
    for k, v in load_weights(tmp_path / "p" / "last.npz").items():
        assert torch.equal(v, load_weights(tmp_path / "h" / "last.npz")[k]), k
