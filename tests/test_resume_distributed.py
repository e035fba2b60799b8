"""Checkpoint/resume equivalence and 2-process (gloo) data-parallel meta-training, on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgemeta.data import load_omniglot
from edgemeta.train.trainer import TrainConfig, meta_train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_sets(omniglot_root):
    train = load_omniglot("lake", "train", omniglot_root).subset(np.arange(40))
    val = load_omniglot("lake", "val", omniglot_root).subset(np.arange(10))
    return train, val


def _weights(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if z[k].dtype.kind == "f"}


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=atol, rtol=0, err_msg=k)


@pytest.mark.parametrize("method,pretrain", [("proto", 0), ("metasgd", 6)])
def test_interrupted_run_resumes_to_the_same_result(small_sets, tmp_path, method, pretrain):
    train, val = small_sets
    cfg = TrainConfig(method=method, ways=5, shots=1, queries=3, max_episodes=12, pretrain_steps=pretrain,
                      pretrain_batch=16, augment=True, val_every=3, val_episodes=5, device="cpu", patience=100)
    quiet = dict(progress=False, log=lambda s: None)
    meta_train(cfg, train, val, tmp_path / "straight", **quiet)
    rec = meta_train(cfg, train, val, tmp_path / "resumed", stop_after=6, **quiet)
    assert rec["stopped"].startswith("interrupted")
    halfway = _weights(tmp_path / "resumed" / "last.npz")
    meta_train(cfg, train, val, tmp_path / "resumed", resume=True, **quiet)
    final = _weights(tmp_path / "resumed" / "last.npz")
    assert any(not np.array_equal(halfway[k], final[k]) for k in final), "resume did not train further"
    _assert_same(_weights(tmp_path / "straight" / "last.npz"), final)
    _assert_same(_weights(tmp_path / "straight" / "best.npz"), _weights(tmp_path / "resumed" / "best.npz"))
    straight = json.loads((tmp_path / "straight" / "run.json").read_text())
    resumed = json.loads((tmp_path / "resumed" / "run.json").read_text())
    assert [h["val_acc"] for h in straight["history"]] == [h["val_acc"] for h in resumed["history"]]


def test_resume_refuses_a_changed_config_or_a_missing_checkpoint(small_sets, tmp_path):
    train, val = small_sets
    cfg = TrainConfig(ways=5, shots=1, queries=3, max_episodes=4, val_every=2, val_episodes=3, device="cpu")
    meta_train(cfg, train, val, tmp_path / "r", progress=False, log=lambda s: None)
    other = TrainConfig(**{**cfg.__dict__, "lr": 0.5})
    with pytest.raises(ValueError, match="another configuration"):
        meta_train(other, train, val, tmp_path / "r", progress=False, resume=True)
    with pytest.raises(ValueError, match="no checkpoint to resume from"):
        meta_train(cfg, train, val, tmp_path / "empty", progress=False, resume=True)


CLI_TRAIN = ["--out", "{out}", "--split", "lake", "--ways", "5", "--shots", "1", "--queries", "3", "--episodes", "60",
             "--val-every", "5", "--val-episodes", "5", "--patience", "100", "--device", "cpu", "--augment",
             "--no-progress"]


def test_init_from_starts_from_another_runs_best_weights(small_sets, tmp_path):
    train, val = small_sets
    base = dict(ways=5, shots=1, queries=3, val_every=2, val_episodes=3, device="cpu",
                backbone_kwargs={"final_pool": False})
    meta_train(TrainConfig(max_episodes=4, **base), train, val, tmp_path / "a", progress=False)
    # lr 0: the optimizer moves nothing, so the parameters are exactly those loaded from run a
    rec = meta_train(TrainConfig(max_episodes=2, lr=0.0, init_from=str(tmp_path / "a"), seed=1, **base), train, val,
                     tmp_path / "b", progress=False)
    assert rec["config"]["init_from"] == str(tmp_path / "a")
    params = lambda w: {k: v for k, v in w.items() if "running" not in k}  # noqa: E731 (BatchNorm stats move)
    a, b = params(_weights(tmp_path / "a" / "best.npz")), params(_weights(tmp_path / "b" / "best.npz"))
    _assert_same(a, b)
    meta_train(TrainConfig(max_episodes=2, lr=0.0, seed=1, **base), train, val, tmp_path / "c", progress=False)
    assert any(not np.array_equal(a[k], v) for k, v in params(_weights(tmp_path / "c" / "best.npz")).items())
    # another rule: the backbone comes from run a, the rule starts from its own initialisation
    meta_train(TrainConfig(method="metasgd", max_episodes=2, lr=0.0, meta_lr=0.0, init_from=str(tmp_path / "a"),
                           seed=1, **base), train, val, tmp_path / "d", progress=False)
    d = params(_weights(tmp_path / "d" / "best.npz"))
    _assert_same({k: v for k, v in a.items() if k.startswith("backbone.")},
                 {k: v for k, v in d.items() if k.startswith("backbone.")})
    assert any(k.startswith("method.") and k not in a for k in d)
    with pytest.raises(ValueError, match=r"do not fit this model.*shape mismatches \['backbone\."):
        meta_train(TrainConfig(max_episodes=2, init_from=str(tmp_path / "a"),
                               **{**base, "backbone_kwargs": {"final_pool": False, "hidden": 32}}),
                   train, val, tmp_path / "f", progress=False)
    with pytest.raises(ValueError, match="no best.npz"):
        meta_train(TrainConfig(max_episodes=2, init_from=str(tmp_path / "zzz"), **base), train, val,
                   tmp_path / "e", progress=False)


def _cli(out: Path) -> list[str]:
    return [sys.executable, "-m", "edgemeta.cli", "train", *[a.format(out=out) for a in CLI_TRAIN]]


@pytest.mark.slow
def test_killed_cli_run_resumes_to_the_same_result(tmp_path):
    """SIGKILL a real `edgemeta train` after its second checkpoint; `--resume` ends where an
    uninterrupted run ends."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_cli(tmp_path / "straight"), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(_cli(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "killed" / "last.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if last.is_file() and json.loads(last.read_text())["position"]["done"] >= 10:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads(last.read_text())["position"]["done"]
    assert 10 <= done < 60, f"the run was not killed midway (checkpoint at {done})"
    subprocess.run([*_cli(tmp_path / "killed"), "--resume"], check=True, env=env, capture_output=True)
    _assert_same(_weights(tmp_path / "straight" / "last.npz"), _weights(tmp_path / "killed" / "last.npz"))


DDP_SCRIPT = """
import sys, numpy as np, torch
torch.set_num_threads(1)
from edgemeta.data import load_omniglot
from edgemeta.train.trainer import TrainConfig, meta_train
train = load_omniglot('lake', 'train').subset(np.arange(40))
val = load_omniglot('lake', 'val').subset(np.arange(10))
cfg = TrainConfig(method=sys.argv[3], ways=5, shots=1, queries=3, max_episodes=8, episodes_per_step=int(sys.argv[2]),
                  val_every=4, val_episodes=5, device='cpu', lr_halve_every=4)
meta_train(cfg, train, val, sys.argv[1], progress=False, log=lambda s: None)
"""


@pytest.mark.parametrize("method", ["proto", pytest.param("metasgd", marks=pytest.mark.slow)])
def test_two_gloo_processes_equal_one_process_with_doubled_batch(tmp_path, method, omniglot_root):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, str(script), str(tmp_path / "one"), "2", method], check=True, env=env,
                   capture_output=True)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    p = subprocess.run([*torchrun, str(script), str(tmp_path / "two"), "1", method], env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    one, two = _weights(tmp_path / "one" / "last.npz"), _weights(tmp_path / "two" / "last.npz")
    params = {k for k in one if k.startswith("model/") and "running_" not in k}
    init_changed = any(np.abs(one[k]).sum() > 0 for k in params)
    assert init_changed
    _assert_same({k: one[k] for k in params}, {k: two[k] for k in params}, atol=1e-5)
    rec = json.loads((tmp_path / "two" / "run.json").read_text())
    assert rec["world_size"] == 2 and rec["episodes"] == 8
