"""Write the fixtures the JavaScript runtime's parity test (js/test/parity.test.js) checks against.

    python tools/node_fixture.py js/test/fixtures          # the committed set (small)
    python tools/node_fixture.py /tmp/fixtures --full                 # + every adaptation method, .zip bundle
    (cd js && EDGEMETA_NODE_FIXTURES=/tmp/fixtures node --test)

The committed set (``js/test/fixtures``, a few hundred KB) uses only the shipped bundles,
referenced by relative path, so ``npm test`` runs on its own; ``tests/test_node_example.py`` checks it
equals what this script writes now. ``--full`` adds bundles built here (below) and a ``.zip`` copy of
the shipped bundle: too large to commit, written into a temporary folder by the pytest wrapper.

The Python runtime (``edgemeta.runtime.FewShotClassifier``) is the reference: for each bundle and
scenario this writes the raw support/query images (bool, uint8 and float32, 28x28 and raw 105x105
Omniglot drawings, non-square crops, dark-ink variants), the labels, and what the Python runtime
computed from them (classes, logits, probabilities, predictions). Node must reproduce them.

Bundles:
- ``models/omniglot-conv4-proto``, the shipped one (also packed as a ``.zip`` and with a reformatted
  but equivalent manifest);
- one bundle per other adaptation method (``metasgd``, ``ridge``, ``finetune``), built here from a
  randomly initialised conv4 model with a fixed seed (BatchNorm statistics made non-trivial by a few
  train-mode forwards, the rule's parameters nudged off their initial values), exported with
  ``graphs_from_model`` + ``check_parity`` + ``write_bundle`` and a manifest shaped like
  ``export_bundle``'s. They are for parity tests only: their accuracy means nothing.

Colour (bundle format version 2): ``case-colour-photos.json`` runs an untrained conv4 colour bundle
(``js/test/colour-bundle``, 3 input channels, hidden width 32, 84x84, ImageNet normalisation
inside backbone.onnx; written once by ``--write-colour-bundle`` and committed, since an export is not
byte-reproducible) on real photos of ``../shared/data/mini-imagenet/sample/test`` in several forms:
downscaled wide and tall, upscaled small, RGBA with transparency, grey, float; the case carries the
sha256 of Python's preprocessed batch, which Node must reproduce bit for bit, and the logits.

Also ``json_cases.json``: manifest texts (real and synthetic: non-ASCII, astral characters, float
formatting edge cases, NaN, duplicate keys) with Python's canonical form and integrity digest, so a
second implementation of ``manifest_digest`` can be checked byte for byte.

Images (zlib-compressed, base64) come from the Omniglot test classes of the Vinyals split (``load_omniglot('vinyals', 'test',
rotations=False)``) and the raw 105x105 drawings of the same characters.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import shutil
import struct
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "omniglot-conv4-proto"
RANDOM_METHODS = ("metasgd", "ridge", "finetune")
COLOUR_BUNDLE = REPO / "js" / "test" / "colour-bundle"
PHOTOS = REPO.parent / "shared" / "data" / "mini-imagenet" / "sample" / "test"
SEED = 7
MARGIN = 1e-3        # queries closer than this to a tie are not used (10x the 1e-4 logit tolerance)
MAX_DROPPED = 0.02   # at most this share of all queries may be dropped as near ties (the Node test checks it)
# Random heads are nearly flat on random embeddings; these settings spread their logits so the
# predictions test something (the rules themselves are unchanged).
METHOD_KWARGS = {"metasgd": {"init_scale": 30.0}, "ridge": {"init_alpha": 300.0, "init_lambda": 0.05}, "finetune": {}}


# ----------------------------------------------------------------------------------------- data

class Omniglot:
    """Vinyals test characters: preprocessed 28x28 float32 images and the raw 105x105 drawings."""

    def __init__(self, root: Path | None):
        from edgemeta.data import load_omniglot
        from edgemeta.data.omniglot import FILES, default_root

        self.test = load_omniglot("vinyals", "test", root, rotations=False)
        root = Path(root) if root is not None else default_root()
        parts = [np.load(root / f, allow_pickle=False) for f in FILES]
        char_ids = np.concatenate([p["char_id"] for p in parts]).astype(np.int64)
        self._row = {int(c): i for i, c in enumerate(char_ids)}
        self._raw = np.concatenate([p["images"] for p in parts])          # uint8 0/1, 1 = ink

    def pick(self, rng: np.random.Generator, ways: int, per_class: int) -> list[dict[str, Any]]:
        """``ways`` random test characters, ``per_class`` distinct drawings each."""
        out = []
        for c in rng.choice(self.test.n_classes, ways, replace=False):
            rows = self.test.offsets[c] + rng.permutation(self.test.counts[c])[:per_class]
            ids = self.test.image_ids[rows]
            out.append({
                "name": self.test.names[c],
                "small": [self.test.images[r, 0] for r in rows],                         # float32 28x28 0/1
                "raw": [self._raw[self._row[int(i) // 100], int(i) % 100].astype(bool) for i in ids],  # 105x105
            })
        return out


def pack(data: np.ndarray) -> str:
    """Row-major bytes, zlib-compressed (level 9), base64."""
    return base64.b64encode(zlib.compress(np.ascontiguousarray(data).tobytes(), 9)).decode("ascii")


def enc(img: np.ndarray) -> dict[str, Any]:
    """One raw image ``[h, w]`` or interleaved colour ``[h, w, 3|4]`` for the Node side: dtype, size,
    channels and the packed row-major bytes."""
    if img.dtype == np.bool_:
        dtype, data = "bool", img.astype(np.uint8)
    elif img.dtype == np.uint8:
        dtype, data = "uint8", img
    elif img.dtype == np.float32:
        dtype, data = "float32", img.astype("<f4")
    else:
        raise TypeError(img.dtype)
    h, w = img.shape[:2]
    channels = img.shape[2] if img.ndim == 3 else 1
    return {"dtype": dtype, "height": int(h), "width": int(w), "channels": int(channels), "zlib": pack(data)}


def dark_uint8(raw_bool: np.ndarray) -> np.ndarray:
    """A drawing as a phone camera would give it: dark ink (0) on white paper (255)."""
    return np.where(raw_bool, 0, 255).astype(np.uint8)


# -------------------------------------------------------------------------- random-model bundles

def untrained_manifest(model: Any, method: str, image_size: tuple[int, int], seed: int,
                       parity: dict[str, Any]) -> dict[str, Any]:
    """The manifest ``export_bundle`` would write (the same ``build_manifest``), for a model that
    has no training run behind it; only the provenance says so."""
    import torch

    from edgemeta.contract.manifest import build_manifest
    from edgemeta.train.export import OPSET

    return build_manifest(
        method=method, image_size=image_size, embedding_dim=model.embedding_dim,
        head_outputs=model.method.param_names, head_hparams=model.method.hparams(),
        provenance={"dataset": None, "backbone": "conv4", "seed": seed, "trained": False,
                    "note": "randomly initialised model for runtime parity tests (tools/node_fixture.py); not for use"},
        parity=parity, onnx_opset=OPSET, torch_version=torch.__version__)


def random_bundle(method: str, out: Path, data: Omniglot, seed: int) -> Path:
    """Export a randomly initialised conv4 + ``method`` model as a bundle (parity-checked)."""
    import torch

    from edgemeta.contract.bundle import write_bundle
    from edgemeta.data.episodes import EpisodeSampler
    from edgemeta.train.export import check_parity, graphs_from_model
    from edgemeta.train.model import FewShotModel

    torch.manual_seed(seed)
    model = FewShotModel("conv4", method, (28, 28), method_kwargs=METHOD_KWARGS[method])
    model.train()
    rows = np.random.default_rng(seed).choice(len(data.test.images), (3, 64), replace=False)
    with torch.no_grad():
        for r in rows:                                       # BatchNorm running stats off their defaults
            model.backbone(torch.from_numpy(data.test.images[np.sort(r)]))
        for p in model.method.parameters():                  # meta-learned scalars off their init values
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    graphs = graphs_from_model(model, (1, 28, 28))
    episodes = []
    for ways, shots in ((5, 1), (5, 5)):
        ep = EpisodeSampler(data.test, ways, shots, 5, seed=seed).episode(0)
        episodes.append((ep.support_x, ep.support_y, ep.query_x))
    parity = check_parity(model, graphs, episodes)
    write_bundle(out, untrained_manifest(model, method, (28, 28), seed, parity), graphs)
    return out


def colour_bundle(out: Path, seed: int = SEED) -> Path:
    """Export an untrained conv4 + proto colour model (3 channels, hidden width 32, 84x84) as a format-2 bundle."""
    import torch

    from edgemeta.contract.bundle import write_bundle
    from edgemeta.contract.manifest import build_manifest
    from edgemeta.train.export import OPSET, graphs_from_model
    from edgemeta.train.model import FewShotModel

    torch.manual_seed(seed)
    model = FewShotModel("conv4", "proto", (84, 84), backbone_kwargs={"hidden": 32}, in_channels=3).eval()
    graphs = graphs_from_model(model, (3, 84, 84))
    manifest = build_manifest(
        method="proto", image_size=(84, 84), embedding_dim=model.embedding_dim,
        head_outputs=model.method.param_names, head_hparams=model.method.hparams(),
        provenance={"dataset": None, "backbone": "conv4", "seed": seed, "trained": False,
                    "note": "randomly initialised colour model for runtime parity tests (tools/node_fixture.py); not for use"},
        parity={}, onnx_opset=OPSET, torch_version=torch.__version__, channels=3)
    write_bundle(out, manifest, graphs)
    return out


def photo_variants(rng: np.random.Generator, photos: Path) -> tuple[list[np.ndarray], list[str], list[np.ndarray]]:
    """3-way 1-shot support and 9 queries from real photos (3 classes), each photo in one form:
    wide and tall (downscaled), small (upscaled), RGBA with transparency, grey, float RGB / RGBA."""
    from PIL import Image

    classes = sorted(p for p in photos.iterdir() if p.is_dir())[:3]
    files = [sorted(c.glob("*.jpg"))[:4] for c in classes]
    rgb = lambda f, h, w: np.asarray(Image.open(f).convert("RGB").resize((w, h), Image.Resampling.BILINEAR))  # noqa: E731

    def rgba(f: Path) -> np.ndarray:
        px = rgb(f, 44, 44)
        alpha = np.clip(np.linspace(-80, 335, 44)[None, :] + rng.integers(-20, 21, (44, 44)), 0, 255).astype(np.uint8)
        return np.concatenate([px, alpha[..., None]], axis=-1)                     # transparent on the left

    forms = [
        lambda f: rgb(f, 86, 120),                                                  # wide: crop + downscale
        lambda f: rgb(f, 120, 86),                                                 # tall: crop + downscale
        lambda f: rgb(f, 40, 56),                                                  # smaller than 84: upscale
        rgba,                                                                      # RGBA uint8
        lambda f: np.asarray(Image.open(f).convert("L").resize((90, 100))),        # grey uint8
        lambda f: (rgb(f, 24, 40) / 255).astype(np.float32),                      # float RGB on the 1/255 grid
        lambda f: (rgba(f) / 255).astype(np.float32),                             # float RGBA
    ]
    support = [rgb(fs[0], 40, 40) for fs in files]                                # upscaled to 84x84
    labels = [c.name for c in classes]
    query = [forms[(k * 3 + i) % len(forms)](f) for k, fs in enumerate(files) for i, f in enumerate(fs[1:])]
    return support, labels, query


def scenario_colour(clf: Any, rng: np.random.Generator, photos: Path) -> dict[str, Any]:
    """Real photos through a colour bundle; Node must give bit-identical preprocessing and logits."""
    import hashlib

    support, labels, query = photo_variants(rng, photos)
    case = fit_case(clf, support, labels, query)
    x = clf.bundle.preprocess(case["query"]).astype("<f4")
    case["preprocessed_sha256"] = hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()
    return {"ink": "auto", "bit_identical": True, **case}


# ---------------------------------------------------------------------------------- scenarios

def answers(clf: Any, query: list[np.ndarray]) -> dict[str, Any]:
    """What the Python runtime answers on ``query`` with its current head (every query)."""
    logits = clf.decision_function(query)
    top2 = np.sort(logits, axis=1)[:, -2:]
    out = {
        "classes": [x.item() if hasattr(x, "item") else x for x in clf.classes_],
        "logits": logits.astype(float).tolist(),
        "proba": clf.predict_proba(query).astype(float).tolist(),
        "predictions": [x.item() if hasattr(x, "item") else x for x in clf.predict(query)],
        "margin": (top2[:, 1] - top2[:, 0]).astype(float).tolist(),
    }
    # open-set rejection (the Python runtime's predict(reject_unknown=True), manifest "open_set")
    if hasattr(clf, "threshold_for"):
        from edgemeta.runtime import InputError

        shots = min(clf.class_counts().values())
        thr = clf.threshold_for(shots)
        if thr is None:
            try:
                clf.predict(query, reject_unknown=True)
                raise AssertionError("expected a refusal without an open-set threshold")
            except InputError as exc:
                out["open_set"] = {"error": str(exc)}
        else:
            pred = clf.predict(query, reject_unknown=True)
            out["open_set"] = {"threshold": thr, "predictions": [x.item() if hasattr(x, "item") else x for x in pred]}
            out["margin"] = np.minimum(out["margin"], np.abs(logits.max(axis=1) - thr)).astype(float).tolist()
    return out


def keep_decided(results: list[dict[str, Any]], n_query: int) -> np.ndarray:
    """Queries whose predicted class is decided well beyond float noise at every step: Python's
    top-2 logit margin (and distance to the open-set threshold) at least ``MARGIN``. Predictions
    must then match exactly whenever the logits match within the test's 1e-4."""
    keep = np.ones(n_query, bool)
    for r in results:
        keep &= np.asarray(r["margin"]) >= MARGIN
    return keep


def subset(result: dict[str, Any], keep: np.ndarray) -> dict[str, Any]:
    out = dict(result)
    for k in ("logits", "proba", "predictions", "margin"):
        out[k] = [v for v, m in zip(result[k], keep) if m]
    if "predictions" in result.get("open_set", {}):
        out["open_set"] = {**result["open_set"], "predictions": [v for v, m in zip(result["open_set"]["predictions"], keep) if m]}
    out["min_margin"] = min(out["margin"]) if out["margin"] else None
    del out["margin"]
    return out


def fit_case(clf: Any, support: list[np.ndarray], labels: list[Any], query: list[np.ndarray]) -> dict[str, Any]:
    clf.fit(support, np.asarray(labels))
    res = answers(clf, query)
    keep = keep_decided([res], len(query))
    return {"support": support, "labels": labels, "query": [q for q, m in zip(query, keep) if m],
            "expected": subset(res, keep), "dropped_near_ties": int((~keep).sum()), "queries_total": len(query)}


def scenario_strings(clf: Any, data: Omniglot, rng: np.random.Generator) -> dict[str, Any]:
    """5-way 5-shot, string labels (two non-ASCII ones, to check code-point ordering), bright ink;
    float 28x28 and raw bool 105x105 support; queries of every dtype and size (nearest resize)."""
    chars = data.pick(rng, 5, 9)
    names = [c["name"] for c in chars[:3]] + ["\ufb00 ligature", "\U0001F600 smile"]
    support, labels, query = [], [], []
    for c, name in zip(chars, names):
        support += c["small"][:3] + c["raw"][3:5]
        labels += [name] * 5
        query += c["small"][5:7]                                            # float32 28x28
        query.append(c["raw"][7])                                           # bool 105x105
        query.append(c["raw"][8].astype(np.uint8) * np.uint8(255))          # uint8 105x105
        query.append(c["raw"][6][:80, :])                                   # bool 80x105 (non-square)
        query.append(c["raw"][5][::2, 1:])                                  # bool 53x104 (non-square)
    query.append(rng.random((20, 17), dtype=np.float32))                    # float noise, upsampled
    query.append(rng.random((64, 40), dtype=np.float32))                    # float noise, 64 -> 28 (running sum)
    return {"ink": "high", **fit_case(clf, support, labels, query)}


def scenario_ints_dark(clf: Any, data: Omniglot, rng: np.random.Generator) -> dict[str, Any]:
    """4-way 3-shot, integer labels (numeric, not lexicographic, order), dark ink on white paper
    (``ink='low'``): uint8 105x105 photos-of-paper and inverted float images."""
    chars = data.pick(rng, 4, 8)
    ints = [10, 2, 100, -7]
    support, labels, query = [], [], []
    for c, y in zip(chars, ints):
        support += [dark_uint8(r) for r in c["raw"][:3]]
        labels += [y] * 3
        query += [dark_uint8(r) for r in c["raw"][3:5]]
        query += [np.float32(1.0) - s for s in c["small"][5:7]]             # float32 28x28, dark ink
        query.append((~c["raw"][7][:, :80]).astype(np.float32))             # float32 105x80, dark ink
    return {"ink": "low", **fit_case(clf, support, labels, query)}


def on_paper(mask: np.ndarray, ink: tuple[float, ...], paper: tuple[float, ...], rng: np.random.Generator,
             noise: float, dtype: type) -> np.ndarray:
    """A drawing ``mask`` (True = stroke) as a colour picture ``[h, w, len(ink)]``: ``ink`` on ``paper``
    (channel values in [0, 1]) with uniform noise of up to ``noise`` grey levels, as uint8 or as
    float32 in [0, 1] (on the 1/255 grid, so the fixtures compress)."""
    px = np.where(mask[..., None], np.asarray(ink), np.asarray(paper))
    px = np.clip(np.round(px * 255) + rng.integers(-noise, noise + 1, px.shape), 0, 255)
    return px.astype(np.uint8) if dtype == np.uint8 else (px / 255).astype(np.float32)


def transparent(mask: np.ndarray, rng: np.random.Generator, dtype: type) -> np.ndarray:
    """RGBA: opaque dark-red strokes, transparent background whose colour must be ignored (composited
    over white), half-transparent pixels where a stroke meets the background."""
    palette = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.2, 0.9, 0.3], [0.5, 0.5, 0.5]])
    rgb = palette[rng.integers(0, len(palette), mask.shape)]
    rgb[mask] = (0.5, 0.05, 0.1)
    edge = mask ^ np.roll(mask, 1, axis=1)
    alpha = np.where(mask, 1.0, 0.0)
    alpha[edge & ~mask] = rng.integers(50, 200, int((edge & ~mask).sum())) / 255
    px = np.concatenate([rgb, alpha[..., None]], axis=-1)
    return np.round(px * 255).astype(np.uint8) if dtype == np.uint8 else px.astype(np.float32)


def polarity_edges() -> list[np.ndarray]:
    """Images on the automatic-polarity boundary: mean exactly 0.5 (kept as is) and just above (inverted)."""
    half = np.zeros((8, 8), np.uint8)
    half[:4] = 255                                   # 2 * sum == 255 * count: not inverted
    above = half.copy()
    above[7, 7] = 1                                  # one grey level more: inverted
    f_half = (half > 0).astype(np.float32)           # float mean exactly 0.5: not inverted
    f_above = f_half.copy()
    f_above[7, 7] = np.float32(1e-6)                 # float64 mean 0.5 + 1.6e-8: inverted
    return [half, above, f_half, f_above]


def scenario_ink(clf: Any, data: Omniglot, rng: np.random.Generator) -> dict[str, Any]:
    """4-way 4-shot with ``ink='auto'`` (the default): each class drawn in several polarities and
    colours (bright float, dark uint8 paper, RGB / RGBA uint8 and float, chalk on a blackboard), plus
    images on the polarity boundary; Node must give bit-identical preprocessing and logits."""
    chars = data.pick(rng, 4, 10)
    half = lambda m: m[::2, ::2]  # noqa: E731 - 53x53: noisy colour pictures at full size would not compress
    variants = [
        lambda m: m,                                                                      # bool, bright ink
        lambda m: np.where(m, 0, 255).astype(np.uint8),                                  # dark ink on white, uint8
        lambda m: on_paper(half(m), (0.08, 0.15, 0.6), (0.98, 0.96, 0.9), rng, 3, np.uint8),  # blue ink, cream paper
        lambda m: transparent(half(m), rng, np.uint8),                                    # RGBA uint8
        lambda m: on_paper(half(m), (0.95, 0.97, 0.9), (0.1, 0.25, 0.15), rng, 3, np.float32),  # chalk, float RGB
        lambda m: transparent(half(m), rng, np.float32),                                  # RGBA float
        lambda m: on_paper(half(m), (0.1,), (0.85,), rng, 3, np.float32)[..., 0],         # grey float, dark ink
        lambda m: on_paper(m, (1.0, 0.2, 0.9), (0.0, 0.0, 0.05), rng, 0, np.uint8)[:80, :],  # neon on black, 80x105
    ]
    support, labels, query = [], [], []
    for k, c in enumerate(chars):
        raw = c["raw"]
        support += [variants[(k + i) % len(variants)](raw[i]) for i in range(4)]
        labels += [f"class {k}"] * 4
        query += [variants[(k + 4 + i) % len(variants)](raw[4 + i]) for i in range(6)]
    query += polarity_edges()
    case = fit_case(clf, support, labels, query)
    case["preprocessed"] = pack(clf.bundle.preprocess(case["query"], ink="auto").astype("<f4"))
    return {"ink": "auto", "bit_identical": True, **case}


def scenario_sequence(clf: Any, data: Omniglot, rng: np.random.Generator) -> dict[str, Any]:
    """fit -> forget -> addClass -> partialFit -> forget, each step checked against the Python
    runtime doing the same (``partial_fit`` / ``forget``; where the runtime lacks them, a fresh
    ``fit`` on what the classifier should then hold, samples in the order given)."""
    chars = {k: c for k, c in zip("abcde", data.pick(rng, 5, 8))}
    query = [img for c in chars.values() for img in c["small"][6:8]]
    first = [(img, k) for k in "abcd" for img in chars[k]["small"][:2]]
    new = [(img, "e") for img in chars["e"]["raw"][:3]]
    more = [(chars["a"]["raw"][2], "a"), (chars["a"]["small"][3], "a"), (chars["c"]["raw"][4], "c")]
    ops = [("fit", first, None), ("forget", None, "b"), ("addClass", new, "e"), ("partialFit", more, None),
           ("forget", None, "a")]
    native = hasattr(clf, "partial_fit") and hasattr(clf, "forget")
    held: list[tuple[np.ndarray, Any]] = []
    steps, results = [], []
    for op, samples, label in ops:
        step: dict[str, Any] = {"op": op}
        if samples is not None:
            step["images"] = [enc(i) for i, _ in samples]
            if op != "addClass":
                step["labels"] = [y for _, y in samples]
        if label is not None:
            step["label"] = label
        if op == "fit":
            held = list(samples)
        elif op == "forget":
            held = [h for h in held if h[1] != label]
        else:
            held += samples
        if op == "fit" or not native:
            clf.fit([h[0] for h in held], np.asarray([h[1] for h in held]))
        elif op == "forget":
            clf.forget(label)
        else:
            clf.partial_fit([i for i, _ in samples], np.asarray([y for _, y in samples]))
        results.append(answers(clf, query))
        steps.append(step)
    keep = keep_decided(results, len(query))
    for step, res in zip(steps, results):
        step["expected"] = subset(res, keep)
    return {"ink": "high", "query": [q for q, m in zip(query, keep) if m], "steps": steps,
            "dropped_near_ties": int((~keep).sum()), "queries_total": len(query),
            "python_ops": "native" if native else "emulated with fit"}


# ------------------------------------------------------------------------------ canonical JSON

def json_cases(manifest_texts: dict[str, str], n: int = 150) -> list[dict[str, Any]]:
    """Manifest texts with Python's canonical form (``bundle._canonical``) and digest; the synthetic
    ones carry ``8 * n`` random doubles (bit patterns, scaled, float32-exact, rounded decimals)."""
    from edgemeta.contract.bundle import _canonical, manifest_digest

    rng = np.random.default_rng(SEED)
    base = json.loads(manifest_texts["shipped"])
    tricky = {
        "text": ["caf\u00e9", "\u65e5\u672c\u8a9e", "\U0001F600", "\u2028\u2029", "ctl\u0000\u0001\u001f\u007f",
                 "quote\" back\\ slash/ tab\t nl\n cr\r bs\b ff\f", "lone \ud800 surrogate", "\ufeffbom"],
        "keys": {"\uffff": 1, "\U0001F600": 2, "a": 3, "B": 4, "\u00e9": 5, "": 6, "aa": 7, "a\u0000": 8},
        "ints": [0, -1, 2**53 + 1, 2**64, -2**70, 10**30],
        "floats": [0.0, -0.0, 1.0, -2.5, 0.1, 1 / 3, 1e-4, 9.999e-5, 1e-5, 1.5e-7, 1e15, 1e16, 123456789012345.6,
                   1234567890123456.0, 9999999999999998.0, 1e21, 1e22, 1.7976931348623157e308, 5e-324, 2.2250738585072014e-308,
                   float(np.float32(0.9389647245407104)), float(np.float32(1e-3)), 100.0, 1e100],
        "special": [math.nan, math.inf, -math.inf],
    }
    bits = rng.integers(0, 2**63, 3 * n, dtype=np.int64)
    doubles = [struct.unpack("<d", struct.pack("<q", int(b)))[0] for b in bits]
    doubles = [d for d in doubles if math.isfinite(d)]
    doubles += (rng.random(3 * n) * 10.0 ** rng.integers(-25, 25, 3 * n)).tolist()
    doubles += [float(np.float32(x)) for x in rng.standard_normal(n)]
    doubles += [float(round(x, k)) for x, k in zip(rng.random(n) * 1000, rng.integers(0, 8, n))]
    synthetic = {**base, "extra": tricky, "doubles": doubles}

    texts = dict(manifest_texts)
    texts["synthetic-ascii-indented"] = json.dumps(synthetic, indent=2, sort_keys=True)
    texts["synthetic-utf8-unsorted"] = json.dumps(synthetic, ensure_ascii=False)
    texts["synthetic-compact-reversed"] = json.dumps(dict(reversed(list(synthetic.items()))), separators=(",", ":"))
    texts["handwritten"] = ('{ "b" : [1, 1.0, 1E5, 1e-7, -0, -0.0, 2.50, 1.000000000000000000001] ,\n\t"a":1, "a": {"y": '
                            'null, "x": [true, false, {}, []]}, "integrity": {"manifest_sha256": "x"},\r\n "esc": '
                            '"\\u00E9\\ud83d\\ude00\\/\\u0041", "raw": "\u00e9\U0001F600"}')
    return [{"name": name, "text": text, "canonical": _canonical(json.loads(text)).decode("ascii"),
             "digest": manifest_digest(json.loads(text))} for name, text in texts.items()]


# ------------------------------------------------------------------------------------- driver

SCENARIOS = {"strings": scenario_strings, "ints-dark": scenario_ints_dark, "sequence": scenario_sequence,
             "ink": scenario_ink}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder to (re)write the fixtures into")
    ap.add_argument("--omniglot", type=Path, default=None, help="Omniglot folder (default: the usual search)")
    ap.add_argument("--photos", type=Path, default=None,
                    help=f"mini-ImageNet sample test photos, one folder per class (default: {PHOTOS})")
    ap.add_argument("--write-colour-bundle", action="store_true",
                    help=f"(re)export the committed colour bundle {COLOUR_BUNDLE.relative_to(REPO)} first")
    ap.add_argument("--full", action="store_true",
                    help="also bundles of every other adaptation method and a .zip bundle (several MB)")
    args = ap.parse_args(argv)

    from edgemeta.contract.bundle import zip_bundle
    from edgemeta.runtime import Bundle, FewShotClassifier

    t0 = time.perf_counter()
    out: Path = args.out.resolve()
    try:
        data = Omniglot(args.omniglot)        # before anything is deleted: no data leaves `out` as it was
    except FileNotFoundError as err:
        print(f"error: the fixtures need Omniglot's test characters: {err}", file=sys.stderr)
        return 2
    photos = args.photos.resolve() if args.photos else PHOTOS
    if not photos.is_dir() or not any(p.is_dir() for p in photos.iterdir()):
        # the committed fixtures hold a colour case: never regenerate them without it
        print(f"error: the fixtures need the mini-ImageNet sample photos (class folders) at {photos} for their "
              "colour case; pass --photos PATH", file=sys.stderr)
        return 2
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rel = lambda p: Path(os.path.relpath(p, out)).as_posix()  # noqa: E731 - paths in the fixtures are relative

    # (name, method, bundle path, precision, scenarios): the shipped bundle at the runtime's default
    # precision (int8 backbone) and its fp32 graph
    runs = [("proto", "proto", SHIPPED, None, tuple(SCENARIOS)), ("proto-fp32", "proto", SHIPPED, "fp32", ("strings",))]
    reformatted = out / "reformatted-manifest.json"
    text = (SHIPPED / "manifest.json").read_text(encoding="utf-8")
    reformatted.write_text(json.dumps(json.loads(text), indent=4, ensure_ascii=False), encoding="utf-8")
    texts = {"shipped": text, "reformatted": reformatted.read_text(encoding="utf-8")}
    index: dict[str, Any] = {"shipped": rel(SHIPPED), "reformatted_manifest": rel(reformatted), "max_dropped": MAX_DROPPED}
    if args.full:
        (out / "bundles").mkdir()
        for i, method in enumerate(RANDOM_METHODS):
            path = random_bundle(method, out / "bundles" / f"random-{method}", data, SEED + i)
            runs.append((method, method, path, None, tuple(SCENARIOS)))
            texts[f"random-{method}"] = (path / "manifest.json").read_text(encoding="utf-8")
        index["zip"] = rel(zip_bundle(SHIPPED, out / "bundles" / "omniglot-conv4-proto.zip"))
    if args.write_colour_bundle:
        shutil.rmtree(COLOUR_BUNDLE, ignore_errors=True)
        colour_bundle(COLOUR_BUNDLE)
    cases = []
    colour = FewShotClassifier(Bundle.load(COLOUR_BUNDLE, threads=1))
    sc = scenario_colour(colour, np.random.default_rng([SEED, 99]), photos)
    case = {"name": "colour-photos", "method": "proto", "bundle": rel(COLOUR_BUNDLE), "ink": sc["ink"],
            "precision": "auto", "python_precision": "fp32", "query": [enc(q) for q in sc["query"]],
            "dropped_near_ties": sc["dropped_near_ties"], "queries_total": sc["queries_total"],
            "support": [enc(s) for s in sc["support"]], "labels": sc["labels"], "expected": sc["expected"],
            "preprocessed_sha256": sc["preprocessed_sha256"], "bit_identical": True}
    (out / f"case-{case['name']}.json").write_text(json.dumps(case), encoding="utf-8")
    cases.append(case["name"])
    for k, (label, method, path, precision, kinds) in enumerate(runs):
        bundle = Bundle.load(path, threads=1, **({"precision": precision} if precision else {}))
        for kind in kinds:
            rng = np.random.default_rng([SEED, k, list(SCENARIOS).index(kind)])
            sc = SCENARIOS[kind](FewShotClassifier(bundle, ink={"ints-dark": "low", "ink": "auto"}.get(kind, "high")), data, rng)
            case = {"name": f"{label}-{kind}", "method": method, "bundle": rel(path), "ink": sc["ink"],
                    "precision": precision or "auto", "python_precision": getattr(bundle, "precision", "fp32"),
                    "query": [enc(q) for q in sc["query"]], "dropped_near_ties": sc["dropped_near_ties"],
                    "queries_total": sc["queries_total"]}
            if "steps" in sc:
                case.update(steps=sc["steps"], python_ops=sc["python_ops"])
            else:
                case.update(support=[enc(s) for s in sc["support"]], labels=sc["labels"], expected=sc["expected"])
            for key in ("preprocessed", "bit_identical"):
                if key in sc:
                    case[key] = sc[key]
            (out / f"case-{case['name']}.json").write_text(json.dumps(case), encoding="utf-8")
            cases.append(case["name"])
    (out / "json_cases.json").write_text(json.dumps(json_cases(texts, 150 if args.full else 40)), encoding="utf-8")
    (out / "index.json").write_text(json.dumps({"cases": cases, **index}, indent=2) + "\n", encoding="utf-8")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {len(cases)} cases and {len(texts) + 4} JSON cases ({size / 1e3:.0f} kB) to {out} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
