"""Shared, session-scoped fixtures: the real Omniglot data, one tiny meta-trained run and its bundle.

The expensive things are built once per test session:
- Omniglot (``../shared/data/omniglot``) is decoded and resized once (``load_omniglot`` caches it).
- ``trained_run``: a tiny Prototypical-Networks run on the Lake split (20-way 1-shot, ~150 episodes
  on the CPU, about 20 s on 2 cores).
- ``bundle_dir``: that run exported (parity-checked ONNX graphs + manifest). Tests that tamper with a
  bundle copy it first (``bundle_copy``); the session bundle itself is never modified.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edgemeta.data.omniglot import default_root, load_omniglot

# One intra-op thread: on a 2-core machine that is also running something else (a training job, a
# benchmark), two spinning OpenMP threads can make the tiny run several times slower; one thread is
# only a little slower on an idle machine. Results never depend on timing either way.
torch.set_num_threads(1)

# The tiny run every bundle-level test shares. Big enough to be clearly better than chance on
# never-seen Lake test alphabets (about 88-90 % 5-way 1-shot), small enough for the default run.
TINY_RUN = dict(device="cpu", method="proto", backbone="conv4", dataset="omniglot", split="lake",
                ways=20, shots=1, queries=5, max_episodes=150, val_every=50, val_episodes=30, seed=0)


@pytest.fixture(scope="session")
def omniglot_root() -> Path:
    """The Omniglot folder the code finds by default (skips the data tests if it is absent)."""
    try:
        return default_root()
    except FileNotFoundError as exc:  # pragma: no cover - the data ships beside the checkout
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def node() -> str:
    """The Node.js executable for the JavaScript runtime's tests (skips where Node.js or js/node_modules is missing)."""
    from test_node_example import _node

    return _node()


@pytest.fixture(scope="session")
def lake_sets(omniglot_root):
    """``(train, val, provenance)`` of the Lake split, through the same path `edgemeta train` uses."""
    from edgemeta.data.sources import training_sets

    return training_sets("omniglot", "lake", (28, 28), omniglot_root)


@pytest.fixture(scope="session")
def lake_val(lake_sets):
    return lake_sets[1]


@pytest.fixture(scope="session")
def lake_test(omniglot_root):
    """The 659 Lake evaluation characters (no rotations): never seen by the tiny run."""
    return load_omniglot("lake", "test", omniglot_root, rotations=False)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, lake_sets):
    """``(run_dir, record)`` of the tiny meta-training run."""
    from edgemeta.train.trainer import TrainConfig, meta_train

    train, val, prov = lake_sets
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    record = meta_train(TrainConfig(**TINY_RUN), train, val, run_dir, provenance=prov, progress=False,
                        log=lambda s: None)
    return run_dir, record


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory, trained_run, lake_val) -> Path:
    """The tiny run exported as a bundle directory (do not modify; copy it with ``bundle_copy``)."""
    from edgemeta.train.export import export_bundle

    out = tmp_path_factory.mktemp("bundle") / "tiny.bundle"
    export_bundle(trained_run[0], out, lake_val, parity_episodes=6, metric_episodes=50)
    return out


@pytest.fixture(scope="session")
def bundle(bundle_dir):
    from edgemeta.runtime import Bundle

    return Bundle.load(bundle_dir)


@pytest.fixture
def bundle_copy(bundle_dir, tmp_path) -> Path:
    """A private copy of the session bundle, free to tamper with."""
    dst = tmp_path / "copy.bundle"
    shutil.copytree(bundle_dir, dst)
    return dst


@pytest.fixture(scope="session")
def task(lake_test):
    """A fixed 5-way task from never-seen test characters: 5 support + 5 query drawings per class.

    Returns ``(support_x [25,28,28], support_names [25], query_x [25,28,28], query_names [25])``
    with images float32 in [0, 1] (1 = ink) and labels the character names.
    """
    rng = np.random.default_rng(1234)
    classes = rng.choice(lake_test.n_classes, 5, replace=False)
    sx, sy, qx, qy = [], [], [], []
    for c in classes:
        rows = lake_test.offsets[c] + rng.permutation(lake_test.counts[c])[:10]
        sx.append(lake_test.images[rows[:5], 0])
        qx.append(lake_test.images[rows[5:], 0])
        sy += [lake_test.names[c]] * 5
        qy += [lake_test.names[c]] * 5
    return np.concatenate(sx), np.array(sy), np.concatenate(qx), np.array(qy)


# ---- the shipped bundle and its own (Vinyals) test classes: shared by the device-runtime tests --------

SHIPPED_BUNDLE = Path(__file__).resolve().parents[1] / "models" / "omniglot-conv4-proto"


@pytest.fixture(scope="session")
def shipped_bundle_dir() -> Path:
    """``models/omniglot-conv4-proto`` (meta-trained on the Vinyals split; never modify it)."""
    if not (SHIPPED_BUNDLE / "manifest.json").is_file():  # pragma: no cover - shipped with the checkout
        pytest.skip(f"shipped bundle not found at {SHIPPED_BUNDLE}")
    return SHIPPED_BUNDLE


@pytest.fixture(scope="session")
def shipped_bundle(shipped_bundle_dir):
    from edgemeta.runtime import Bundle

    return Bundle.load(shipped_bundle_dir)


@pytest.fixture(scope="session")
def vinyals_test(omniglot_root):
    """The 423 Vinyals test characters (no rotations): never seen by the shipped bundle."""
    return load_omniglot("vinyals", "test", omniglot_root, rotations=False)


def draw_task(data, n_classes: int, shots: int, queries: int, seed: int, exclude=()):
    """``(support_x, support_y, query_x, query_y)`` from ``n_classes`` random classes of ``data``
    (none of ``exclude``): float32 ``[N, 28, 28]`` images (1 = ink), labels the character names."""
    rng = np.random.default_rng(seed)
    pool = [c for c in range(data.n_classes) if data.names[c] not in set(exclude)]
    classes = rng.choice(pool, n_classes, replace=False)
    sx, sy, qx, qy = [], [], [], []
    for c in classes:
        rows = data.offsets[c] + rng.permutation(data.counts[c])[:shots + queries]
        sx.append(data.images[rows[:shots], 0])
        qx.append(data.images[rows[shots:], 0])
        sy += [data.names[c]] * shots
        qy += [data.names[c]] * queries
    return np.concatenate(sx), np.array(sy), np.concatenate(qx), np.array(qy)


@pytest.fixture(scope="session")
def shipped_task(vinyals_test):
    """A fixed 5-way 5-shot task (5 queries per class) from never-seen Vinyals test characters."""
    return draw_task(vinyals_test, 5, 5, 5, seed=4321)


@pytest.fixture(scope="session")
def task_drawer():
    """:func:`draw_task` for tests that need more tasks than the fixed ones."""
    return draw_task


# ---- a small real colour bundle (format version 2, channels 3): shared by the colour-runtime tests ----

COLOUR_SIZE = (84, 84)


@pytest.fixture(scope="session")
def colour_bundle_dir(tmp_path_factory) -> Path:
    """An untrained conv4 + proto model for ``[N, 3, 84, 84]`` photos (seeded), exported through
    ``graphs_from_model`` + ``build_manifest(channels=3)`` + ``write_bundle`` (do not modify; copy it).
    Its answers mean nothing; it is a real bundle of the colour contract."""
    from edgemeta.contract.bundle import write_bundle
    from edgemeta.contract.manifest import build_manifest
    from edgemeta.train.export import OPSET, graphs_from_model
    from edgemeta.train.model import FewShotModel

    torch.manual_seed(11)
    model = FewShotModel("conv4", "proto", image_size=COLOUR_SIZE, in_channels=3).eval()
    graphs = graphs_from_model(model, (3, *COLOUR_SIZE))
    manifest = build_manifest(
        method="proto", image_size=COLOUR_SIZE, embedding_dim=model.embedding_dim,
        head_outputs=model.method.param_names, head_hparams=model.method.hparams(),
        provenance={"dataset": None, "backbone": "conv4", "seed": 11, "trained": False,
                    "note": "untrained colour model for runtime tests; not for use"},
        parity={}, onnx_opset=OPSET, torch_version=torch.__version__, channels=3)
    return write_bundle(tmp_path_factory.mktemp("colour") / "colour.bundle", manifest, graphs)
