"""Give a proto bundle semi-supervised refinement: fit the distractor mask, write ``refine.onnx``.

:func:`add_refine` reads a verified bundle, embeds held-out validation classes through its own
backbone (the runtime's path), fits :class:`~edgemeta.train.soft_kmeans.MaskedSoftKMeans`'s two mask
scalars on episodes with distractors, exports the module as ``refine.onnx``, refuses if onnxruntime
and torch disagree, and writes a new bundle: every file of the input byte for byte, plus
``refine.onnx`` and the manifest's ``refine`` section (so format version 3) with new integrity.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from edgemeta.contract.bundle import read_bundle, write_bundle
from edgemeta.contract.manifest_schema import REFINE_GRAPH
from edgemeta.data.classes import ClassImages
from edgemeta.errors import ExportError
from edgemeta.runtime.loaded_bundle import Bundle, make_session
from edgemeta.runtime.semisupervised import REFINE_INPUTS
from edgemeta.semisupervised_eval import embed_classes, sample_semi_episode
from edgemeta.train.soft_kmeans import MaskedSoftKMeans, fit_mask

OPSET = 17
PARITY_TOL = 1e-4          # max |torch - onnxruntime| prototype entry, relative to (1 + max |prototype|)
DEFAULT_MAX_UNLABELED = 1000
Settings = tuple[tuple[int, int, int, int], ...]          # (ways, shots, M unlabelled per class, D distractors)
FIT_SETTINGS: Settings = ((5, 1, 5, 0), (5, 1, 5, 5), (20, 1, 5, 0), (20, 1, 5, 20), (5, 5, 10, 5), (20, 1, 14, 20))
PARITY_SETTINGS: Settings = ((5, 1, 0, 0), (5, 1, 5, 0), (5, 1, 5, 5), (20, 1, 5, 20), (5, 5, 10, 5), (20, 5, 5, 0))


def feasible(settings: Settings, counts: np.ndarray, queries: int = 5) -> Settings:
    """The (ways, shots, M, D) settings whose episodes ``counts`` (images per class) can hold; an ExportError
    when none can (a validation set too small to fit the mask on)."""
    ok = tuple(s for s in settings if int((counts >= s[1] + queries + s[2]).sum()) >= s[0] + s[3])
    if not ok:
        raise ExportError(f"the validation classes ({len(counts)} classes, {int(counts.min())}..{int(counts.max())} "
                          f"images each) hold none of the fitting episodes {list(settings)}; expected at least "
                          f"10 classes of 11 images")
    return ok


def validation_classes(manifest: dict[str, Any], omniglot_root: str | Path | None = None,
                       folder: str | Path | None = None) -> tuple[ClassImages, str]:
    """The held-out validation classes of a bundle's meta-training, to fit its mask on: ``folder``
    (``<class>/*`` images) if given, else Omniglot's validation part of the bundle's split, else the
    ``val/`` folder beside the ``train/`` one its provenance names. Never its test classes."""
    from edgemeta.data.files import load_image_folder
    from edgemeta.data.omniglot import load_omniglot
    from edgemeta.data.photos import load_photo_folder

    spec = manifest["preprocess"]
    size = (int(spec["size"][0]), int(spec["size"][1]))
    colour = int(spec.get("channels", 1)) == 3
    prov = manifest.get("provenance", {})
    if folder is None and prov.get("dataset") == "omniglot":
        split = prov.get("split", "vinyals")
        return load_omniglot(split, "val", omniglot_root, size), f"omniglot/{split}/val classes"
    if folder is None and isinstance(prov.get("dataset"), str) and (Path(prov["dataset"]) / "val").is_dir():
        folder = Path(prov["dataset"]) / "val"
    if folder is None:
        raise ExportError(f"cannot find this bundle's validation classes (provenance dataset "
                          f"{prov.get('dataset')!r}); pass --val FOLDER with them (one sub-folder of images per class)")
    data = load_photo_folder(folder, size) if colour else load_image_folder(folder, spec)
    return data, f"{folder} classes"


def refine_graph(module: MaskedSoftKMeans, d: int) -> bytes:
    """``refine.onnx``: support ``[S, d]``, one-hot ``[S, C]``, unlabelled ``[U, d]`` -> ``prototypes [C, d]``."""
    module = module.eval().cpu()
    args = (torch.randn(6, d), torch.eye(3)[torch.arange(6) % 3], torch.randn(4, d))
    axes = {"support_embeddings": {0: "S"}, "support_labels_onehot": {0: "S", 1: "C"},
            "unlabeled_embeddings": {0: "U"}, "prototypes": {0: "C"}}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, input_names=REFINE_INPUTS, output_names=["prototypes"],
                          opset_version=OPSET, dynamic_axes=axes, do_constant_folding=True, dynamo=False)
    return buf.getvalue()


def refine_parity(module: MaskedSoftKMeans, graph: bytes, embeddings: np.ndarray, offsets: np.ndarray,
                  counts: np.ndarray, episodes: int = 12, seed: int = 0,
                  settings: Settings = PARITY_SETTINGS) -> dict[str, Any]:
    """Largest ``|torch - onnxruntime|`` prototype entry over episodes of ``embeddings`` (``settings``:
    (ways, shots, M, D), with and without unlabelled samples and distractors); :class:`ExportError` above
    :data:`PARITY_TOL`."""
    session = make_session(graph)
    rng = np.random.default_rng(seed)
    worst, scale = 0.0, 0.0
    for e in range(episodes):
        ways, shots, m, dis = settings[e % len(settings)]
        ep = sample_semi_episode(rng, offsets, counts, ways, shots, 1, m, dis)
        onehot = np.eye(ways, dtype=np.float32)[np.repeat(np.arange(ways), shots)]
        s, u = embeddings[ep.support], embeddings[ep.unlabeled]
        with torch.no_grad():
            want = module(torch.from_numpy(s), torch.from_numpy(onehot), torch.from_numpy(u)).numpy()
        got = session.run(["prototypes"], dict(zip(REFINE_INPUTS, (s, onehot, u))))[0]
        worst, scale = max(worst, float(np.abs(got - want).max())), max(scale, float(np.abs(want).max()))
    if not worst <= PARITY_TOL * (1.0 + scale):
        raise ExportError(f"{REFINE_GRAPH} and the torch module disagree by {worst:.3g} (limit "
                          f"{PARITY_TOL * (1.0 + scale):.3g}); not written")
    return {"prototypes_max_abs": worst, "episodes_checked": episodes}


def add_refine(bundle_path: str | Path, out: str | Path, val: ClassImages, *, max_unlabeled: int = DEFAULT_MAX_UNLABELED,
               steps: int = 1, fit_steps: int = 300, seed: int = 0, calibrated_on: str = "val classes",
               settings: Settings | None = None, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Write ``out``: the bundle at ``bundle_path`` plus a fitted, parity-checked ``refine.onnx``.

    ``val``: held-out validation classes of the bundle's meta-training (never test classes); the mask
    is fitted on their embeddings. ``settings``: the fitting episodes' (ways, shots, M, D) (default
    :data:`FIT_SETTINGS`, those that ``val`` can hold); parity is checked on the same settings and on them
    without unlabelled samples. Returns the new manifest.
    """
    manifest, files = read_bundle(bundle_path)
    if manifest["method"] != "proto":
        raise ExportError(f"{bundle_path}: refinement refines prototypes; this bundle's method is "
                          f"{manifest['method']!r} (a linear head has no prototypes)")
    if Path(out).resolve() == Path(bundle_path).resolve():
        raise ExportError(f"add-refine writes a new bundle; {out} is the input bundle itself (choose another OUT, "
                          f"so the bundle deployed devices load stays as it is)")
    bundle = Bundle(manifest, dict(files), str(bundle_path))
    log(f"embedding {val.n_images} images of {val.n_classes} {calibrated_on} through the bundle")
    emb = embed_classes(bundle, val)
    torch.manual_seed(seed)
    module = MaskedSoftKMeans(float(manifest["head"]["scale"]), steps=steps)
    settings = feasible(settings or FIT_SETTINGS, val.counts)
    fit = fit_mask(module, emb, val.offsets, val.counts, steps=fit_steps, seed=seed, log=log, settings=settings)
    fit["settings"] = [list(s) for s in settings]
    graph = refine_graph(module, bundle.embedding_dim)
    checked = feasible(tuple((w, k, 0, 0) for w, k, _, _ in settings) + settings, val.counts, 1)
    parity = refine_parity(module.eval(), graph, emb, val.offsets, val.counts, seed=seed + 1, settings=checked)
    log(f"parity: max |torch - onnxruntime| {parity['prototypes_max_abs']:.2g}")
    new = {k: v for k, v in manifest.items() if k not in ("format", "format_version", "files", "integrity")}
    new["refine"] = {"graph": REFINE_GRAPH, "rule": "masked_soft_kmeans", "outputs": list(manifest["head"]["outputs"]),
                     "max_unlabeled": int(max_unlabeled), "steps": int(steps), "distractor": module.settings(),
                     "calibrated_on": f"{calibrated_on} ({val.n_classes} classes, never test), {fit['steps']} Adam "
                                      f"steps on episodes with and without distractors",
                     "fit": fit, "parity": parity}
    write_bundle(out, new, {**files, REFINE_GRAPH: graph})
    loaded = Bundle.load(out)                 # the refine graph's own load checks, on what was written
    for name, data in files.items():
        if (Path(out) / name).read_bytes() != data:           # pragma: no cover - write_bundle copies bytes
            raise ExportError(f"{out}/{name} differs from the input bundle's; expected it byte for byte")
    return loaded.manifest
