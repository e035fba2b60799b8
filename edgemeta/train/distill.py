"""Distil a bundle's embedding (teacher) into a single-view conv4 (student): one backbone pass per image.

The teacher is any conv4 bundle, typically one whose ``backbone.onnx`` averages the embedding over
several one-pixel shifts of each image (:mod:`edgemeta.train.shift_views`); it is run through
onnxruntime exactly as shipped. The student is a plain conv4 whose weights start as the teacher's
own convolutions, read from the ONNX initialisers (:func:`conv4_state_from_onnx`), and is trained on
augmented meta-training episodes to (a) reproduce the teacher's embedding of each image (relative
squared error) and (b) classify the episode's queries with the teacher's Prototypical-Networks head
(cross-entropy). ``widths`` widens the student's inner convolutions first (Net2WiderNet,
:func:`edgemeta.train.widen.widen_conv4`: the same function, more channels to learn with; the
embedding and the teacher's head are kept). The weights best on validation episodes are kept. The run folder has the layout
of ``edgemeta train`` (``run.json``, ``best.npz``, ``last.*``), so ``edgemeta export`` ships it as
an ordinary single-view bundle through the same parity and int8 gates.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from edgemeta import __version__
from edgemeta.contract.bundle import read_bundle
from edgemeta.data.classes import ClassImages
from edgemeta.data.episodes import EpisodeSampler
from edgemeta.errors import InputError
from edgemeta.runtime.loaded_bundle import Bundle
from edgemeta.train.augment import random_affine
from edgemeta.train.checkpoint import load_json, save_json, save_weights
from edgemeta.train.model import FewShotModel
from edgemeta.train.resume import has_checkpoint, load_checkpoint, save_checkpoint
from edgemeta.train.trainer import TrainConfig, to_input, validate
from edgemeta.train.widen import widen_conv4

BN_EPS = 1e-5          # torch's BatchNorm2d default; running_var = 1 - eps makes the layer the identity


@dataclass
class DistillConfig:
    """Everything that determines a distillation run (recorded in ``run.json``)."""

    teacher: str                        # bundle folder or zip
    ways: int = 60
    shots: int = 1
    queries: int = 5
    episodes: int = 2_000
    lr: float = 1e-4
    lr_halve_every: int = 1_000
    distill_weight: float = 100.0       # weight of the relative embedding error next to the episode loss
    val_every: int = 200
    val_episodes: int = 600
    val_ways: int = 20
    val_shots: int = 1
    val_queries: int = 15
    patience: int = 6
    seed: int = 0
    widths: list[int] | None = None     # the student's four channel counts (None: the teacher's own)
    widen_noise: float = 0.05           # symmetry-breaking noise of the widening (relative; 0: exact copies)


def conv4_state_from_onnx(backbone: bytes) -> tuple[dict[str, torch.Tensor], int, bool]:
    """``(state, hidden, final_pool)``: a :class:`edgemeta.train.backbones.Conv4` state dict (keys
    ``blocks.{i}.0.*`` convolutions, ``blocks.{i}.1.*`` identity BatchNorms) holding the four 3x3
    convolutions of a conv4 ``backbone.onnx`` (BatchNorm folded at export), the channel count, and
    whether the graph max-pools after the fourth convolution. Anything else is an :class:`InputError`."""
    import onnx

    try:
        graph = onnx.load_from_string(backbone).graph
    except Exception as exc:            # noqa: BLE001 - protobuf raises several types on bad bytes
        raise InputError(f"teacher backbone is not a readable ONNX graph: {exc}") from None
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    pools = [n for n in graph.node if n.op_type == "MaxPool"]
    if len(convs) != 4 or len(pools) not in (3, 4):
        raise InputError(f"teacher backbone: expected a conv4 graph (4 Conv and 3 or 4 MaxPool nodes), got "
                         f"{len(convs)} Conv and {len(pools)} MaxPool nodes")
    state: dict[str, torch.Tensor] = {}
    hidden = None
    for i, node in enumerate(convs):
        if len(node.input) != 3 or node.input[1] not in inits or node.input[2] not in inits:
            raise InputError(f"teacher backbone: Conv node {i} should take constant weights and a bias")
        w, b = inits[node.input[1]].astype(np.float32), inits[node.input[2]].astype(np.float32)
        hidden = w.shape[0] if hidden is None else hidden
        cin = w.shape[1] if i == 0 else hidden
        if w.shape != (hidden, cin, 3, 3) or b.shape != (hidden,) or not np.isfinite(w).all() or not np.isfinite(b).all():
            raise InputError(f"teacher backbone: Conv node {i} should hold finite 3x3 weights "
                             f"[{hidden}, {cin}, 3, 3] and bias [{hidden}], got {list(w.shape)} and {list(b.shape)}")
        state[f"blocks.{i}.0.weight"], state[f"blocks.{i}.0.bias"] = torch.from_numpy(w), torch.from_numpy(b)
        state[f"blocks.{i}.1.weight"], state[f"blocks.{i}.1.bias"] = torch.ones(hidden), torch.zeros(hidden)
        state[f"blocks.{i}.1.running_mean"] = torch.zeros(hidden)
        state[f"blocks.{i}.1.running_var"] = torch.full((hidden,), 1.0 - BN_EPS)
        state[f"blocks.{i}.1.num_batches_tracked"] = torch.tensor(0)
    assert hidden is not None
    return state, int(hidden), len(pools) == 4


def student_from_teacher(manifest: dict[str, Any], files: dict[str, bytes]) -> FewShotModel:
    """A single-view conv4 + ``proto`` model holding a verified teacher bundle's (:func:`read_bundle`)
    convolutions and head scale, in eval mode (its BatchNorms are identities with frozen statistics
    and trainable affine terms)."""
    channels = int(manifest["input"]["shape"][1])
    if manifest["method"] != "proto" or channels != 1:
        raise InputError(f"distillation takes a grey proto conv4 bundle as teacher; this one is "
                         f"{manifest['method']}, {channels} channel(s)")
    state, hidden, final_pool = conv4_state_from_onnx(files[manifest["graphs"]["backbone"]])
    size = tuple(int(v) for v in manifest["input"]["shape"][2:])
    model = FewShotModel("conv4", "proto", size, {"hidden": hidden, "final_pool": final_pool} if hidden != 64
                         else {"final_pool": final_pool})
    if model.embedding_dim != int(manifest["embedding"]["dim"]):
        raise InputError(f"teacher backbone: its convolutions give a {model.embedding_dim}-d embedding, the "
                         f"manifest says {manifest['embedding']['dim']}")
    model.backbone.load_state_dict(state)
    with torch.no_grad():
        model.method.log_scale.fill_(math.log(float(manifest["head"]["scale"])))
    return model.eval()


def parse_widths(text: str | None) -> list[int] | None:
    """``"64,64,320,64"`` -> ``[64, 64, 320, 64]`` (None stays None); anything else is an :class:`InputError`."""
    if text is None:
        return None
    try:
        widths = [int(v) for v in text.split(",")]
    except ValueError:
        widths = []
    if len(widths) != 4 or min(widths) < 1:
        raise InputError(f"--widths takes four positive channel counts separated by commas (e.g. 64,64,320,64), "
                         f"got {text!r}")
    return widths


def student_for(cfg: DistillConfig, manifest: dict[str, Any], files: dict[str, bytes]) -> FewShotModel:
    """The run's starting student: :func:`student_from_teacher`, widened to ``cfg.widths`` (seeded by
    ``cfg.seed``) when given; it computes the teacher's single-view embedding either way."""
    model = student_from_teacher(manifest, files)
    if cfg.widths is not None and list(cfg.widths) != list(model.backbone.widths):
        model.backbone = widen_conv4(model.backbone, cfg.widths, cfg.widen_noise, cfg.seed)
    return model.eval()


def distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Relative squared error ``mean ||s - t||^2 / mean ||t||^2`` of embeddings ``[N, D]`` (0 when equal)."""
    return ((student - teacher) ** 2).sum(1).mean() / (teacher ** 2).sum(1).mean().clamp_min(1e-12)


def _train_config(cfg: DistillConfig, teacher: Bundle, model: FewShotModel) -> TrainConfig:
    """The ``edgemeta train`` config this run is equivalent to, so ``export`` rebuilds the student."""
    prov = teacher.manifest["provenance"]
    widths, final_pool = list(model.backbone.widths), model.backbone.final_pool
    if len(set(widths)) > 1:
        kwargs: dict[str, Any] = {"final_pool": final_pool, "widths": widths}
    else:
        kwargs = {"final_pool": final_pool, **({"hidden": widths[0]} if widths[0] != 64 else {})}
    return TrainConfig(method="proto", backbone="conv4", dataset=prov.get("dataset") or "omniglot",
                       split=prov.get("split", "vinyals"), image_size=tuple(teacher.manifest["input"]["shape"][2:]),
                       channels=1, ways=cfg.ways, shots=cfg.shots, queries=cfg.queries, max_episodes=cfg.episodes,
                       lr=cfg.lr, lr_halve_every=cfg.lr_halve_every, augment=True, val_every=cfg.val_every,
                       val_episodes=cfg.val_episodes, val_ways=cfg.val_ways, val_shots=cfg.val_shots,
                       val_queries=cfg.val_queries, patience=cfg.patience, seed=cfg.seed, device="cpu",
                       backbone_kwargs=kwargs)


def distill(cfg: DistillConfig, train: ClassImages, val: ClassImages, out_dir: str | Path,
            resume: bool = False, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train the student of ``cfg.teacher`` on ``train`` episodes; keep the weights best on ``val``.

    ``train`` must be the teacher's meta-training classes and ``val`` its validation classes (never
    test classes). Validation is ``cfg.val_ways``-way ``cfg.val_shots``-shot on fixed episodes; the
    teacher is measured once on the same episodes (``run.json``'s ``teacher_val``). Checkpoints after
    every validation; ``resume`` continues from the last one with the same settings (``episodes``
    may grow). Returns the run record.
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest, files = read_bundle(cfg.teacher)
    teacher = Bundle(manifest, files, str(cfg.teacher), threads=1, precision="fp32")
    torch.manual_seed(cfg.seed)
    model = student_for(cfg, manifest, files).to(memory_format=torch.channels_last)
    tcfg = _train_config(cfg, teacher, model)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, max(1, cfg.lr_halve_every), 0.5)
    images = torch.from_numpy(train.pixels).contiguous(memory_format=torch.channels_last)
    sampler = EpisodeSampler(train, cfg.ways, cfg.shots, cfg.queries, cfg.seed)
    yq = torch.from_numpy(sampler.labels()[1])
    n_s = cfg.ways * cfg.shots
    onehot = F.one_hot(torch.arange(cfg.ways).repeat_interleave(cfg.shots), cfg.ways).float()
    val_seed = cfg.seed + 1_000_003
    if resume:
        if not has_checkpoint(out):
            raise InputError(f"{out} has no checkpoint to resume from (expected last.json + last.npz)")
        record = load_json(out / "run.json")
        same = {k: v for k, v in asdict(cfg).items() if k != "episodes"}
        # settings added after a run was recorded take their defaults (what that run used)
        recorded = {**{f.name: f.default for f in fields(DistillConfig) if f.name not in record["distill"]},
                    **record["distill"]}
        if {k: v for k, v in recorded.items() if k != "episodes"} != same:
            raise InputError(f"{out} was started with other distillation settings; resume it with the same ones "
                             f"(only --episodes may change)")
        record["distill"]["episodes"] = record["config"]["max_episodes"] = cfg.episodes
        record["stopped"] = "running (or killed)"
        position = load_checkpoint(out, {"model": model}, opt, sched, gen)
        done, bad, best = position["done"], position["bad"], position["best_acc"]
    else:
        tz = torch.from_numpy(np.concatenate([teacher.embed(val.batch(slice(i, i + 256)).astype(np.float32))
                                              for i in range(0, val.n_images, 256)]))
        t_acc, t_ci = validate(model, val, cfg.val_ways, cfg.val_shots, cfg.val_queries, cfg.val_episodes,
                               val_seed, torch.device("cpu"), tz)
        record = {"config": tcfg.to_json(), "distill": asdict(cfg), "code_version": __version__, "device": "cpu",
                  "provenance": {**{k: v for k, v in teacher.manifest["provenance"].items()
                                    if k in ("dataset", "split", "train_classes", "val_classes", "rotations")},
                                 "distilled_from": {"bundle": str(cfg.teacher),
                                                    "manifest_sha256": teacher.manifest["integrity"]["manifest_sha256"],
                                                    "shift_views": len(teacher.manifest["embedding"].get("shift_views", [[0, 0]]))}},
                  "teacher_val": {"val_acc": t_acc, "val_ci95": t_ci}, "history": [], "best": None,
                  "episodes": 0, "train_seconds": 0.0, "stopped": "running (or killed)"}
        s_acc, s_ci = validate(model, val, cfg.val_ways, cfg.val_shots, cfg.val_queries, cfg.val_episodes,
                               val_seed, torch.device("cpu"))
        record["student_start_val"] = {"val_acc": s_acc, "val_ci95": s_ci}
        log(f"teacher on the validation episodes: {t_acc:.2f} ± {t_ci:.2f}; student before training "
            f"(widths {list(model.backbone.widths)}): {s_acc:.2f} ± {s_ci:.2f}")
        done, bad, best = 0, 0, -1.0
    t0 = time.perf_counter() - float(record["train_seconds"])
    run_ce = run_d = None
    while done < cfg.episodes:
        idx = sampler.indices(done)
        x = random_affine(to_input(images[torch.from_numpy(np.concatenate([idx.support, idx.query]))]), gen)
        target = torch.from_numpy(teacher.embed(np.ascontiguousarray(x.numpy())))
        z = model.backbone(x)
        logits = model.method.episode_logits(z[:n_s], onehot, z[n_s:])
        ce, d = F.cross_entropy(logits, yq), distill_loss(z, target)
        loss = ce + cfg.distill_weight * d
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        done += 1
        run_ce = ce.item() if run_ce is None else 0.95 * run_ce + 0.05 * ce.item()
        run_d = d.item() if run_d is None else 0.95 * run_d + 0.05 * d.item()
        if done % cfg.val_every == 0 or done >= cfg.episodes:
            acc, ci = validate(model, val, cfg.val_ways, cfg.val_shots, cfg.val_queries, cfg.val_episodes,
                               val_seed, torch.device("cpu"))
            elapsed = round(time.perf_counter() - t0, 2)
            record["history"].append({"phase": "distill", "step": done, "seconds": elapsed, "train_ce": run_ce,
                                      "train_distill": run_d, "val_acc": acc, "val_ci95": ci})
            if acc > best:
                best, bad = acc, 0
                save_weights(out / "best.npz", model.state_dict())
                record["best"] = {"phase": "distill", "step": done, "val_acc": acc, "val_ci95": ci, "seconds": elapsed,
                                  "val_setting": f"{cfg.val_ways}-way {cfg.val_shots}-shot {cfg.val_queries}-query, "
                                                 f"{cfg.val_episodes} episodes"}
            else:
                bad += 1
            record.update(episodes=done, train_seconds=elapsed)
            stop = bad >= cfg.patience
            if stop:
                record["stopped"] = f"no val improvement in {cfg.patience} validations"
            save_checkpoint(out, {"model": model}, opt, sched, gen,
                            {"phase": "distill", "done": done, "bad": bad, "best_acc": best, "finished": stop})
            save_json(out / "run.json", record)
            log(f"distill {done}: val {cfg.val_ways}w{cfg.val_shots}s {acc:.2f} ± {ci:.2f} (best {best:.2f}, "
                f"teacher {record['teacher_val']['val_acc']:.2f}) ce {run_ce:.3f} distill {run_d:.4f} [{elapsed:.0f}s]")
            if stop:
                break
    if record["stopped"].startswith("running"):
        record["stopped"] = "completed all steps"
    save_json(out / "run.json", record)
    return record



def run_distill(cfg: DistillConfig, out_dir: str | Path, omniglot_root: str | Path | None = None,
                resume: bool = False) -> dict[str, Any]:
    """:func:`distill` on the teacher's own meta-training and validation classes (its manifest's
    dataset and split). A folder that already holds a run is refused unless ``resume``."""
    from edgemeta.data.sources import training_sets

    out = Path(out_dir)
    if not resume and (out / "run.json").exists():
        raise InputError(f"{out} already holds a run; continue it with --resume or choose another --out")
    manifest, _ = read_bundle(cfg.teacher)
    prov = manifest["provenance"]
    if prov.get("dataset") != "omniglot":
        raise InputError(f"distillation reads the teacher's Omniglot split; this teacher was trained on "
                         f"{prov.get('dataset')!r}")
    size = tuple(int(v) for v in manifest["input"]["shape"][2:])
    train, val, _ = training_sets("omniglot", prov.get("split", "vinyals"), size, omniglot_root)
    return distill(cfg, train, val, out, resume=resume)
