"""Workstation commands of ``edgemeta``: train, export (need torch), eval, inspect, bench (through the
device runtime)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Optional

import typer

from edgemeta.cli_app import BUNDLE_HELP, command, given_path
from edgemeta.errors import InputError
from edgemeta.train.method_specs import METHOD_SPECS


def _echo_err(line: str) -> None:
    typer.echo(line, err=True)


# ---------------------------------------------------------------------------------------------- train
DEFAULT_MAX_EPISODES = 40_000          # TrainConfig.max_episodes (a test holds them equal)
RUN_FILES = ("run.json", "best.npz", "last.json", "last.npz")


def _per_method(field: str, default: Any) -> str:
    """``proto 40000, metasgd 40000, ...``: a training setting's default for each registered rule."""
    return ", ".join(f"{name} {spec.train.get(field, default)}" for name, spec in METHOD_SPECS.items())


def _method_kwargs_defaults() -> str:
    return "; ".join(f"{name} {json.dumps(dict(spec.method_kwargs))}" for name, spec in METHOD_SPECS.items()
                     if spec.method_kwargs)


def _json_object(text: Optional[str], flag: str) -> dict[str, Any]:
    """``--method-kwargs`` / ``--backbone-kwargs`` as a dict; anything but a JSON object is refused."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{flag} must be a JSON object such as '{{\"steps\": 5}}': {exc}") from None
    if not isinstance(value, dict):
        raise InputError(f"{flag} must be a JSON object such as '{{\"steps\": 5}}', got {text!r}")
    return value


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse to train into a folder that already holds a run, unless ``--overwrite`` (then the old
    run's files are removed first, so a later ``--resume`` can never pick up the old run)."""
    existing = [f for f in RUN_FILES if (out / f).exists()]
    if not existing:
        return
    if not overwrite:
        raise InputError(f"{out} already holds a run ({', '.join(existing)}); continue it with "
                         f"`edgemeta train --out {out} --resume`, replace it with --overwrite, or choose another --out")
    if os.environ.get("RANK", "0") == "0":          # under torchrun only rank 0 writes (and removes)
        for f in existing:
            (out / f).unlink(missing_ok=True)


@command()
def train(
    out: Path = typer.Option(..., "--out", metavar="RUN", parser=given_path, help="Run folder (run.json, best.npz and checkpoints are "
                                                               "written here). Refused if it holds a run already."),
    method: str = typer.Option("proto", metavar="RULE", help=f"Adaptation rule: {', '.join(METHOD_SPECS)}; with "
                                                            f"--task sinusoid: alpaca or metasgd."),
    task: str = typer.Option("classification", metavar="TASK", help="classification (episodes of classes) or "
                                                                     "sinusoid (regression; then only --out, "
                                                                     "--method, --episodes = meta-steps of 25 tasks, "
                                                                     "--lr, --seed, --method-kwargs, --resume, "
                                                                     "--overwrite apply; see docs/regression.md)."),
    backbone: str = typer.Option("conv4", metavar="NAME", help="Backbone: conv4 (glyphs 28x28, photos 84x84), resnet12 (photos) or mlp."),
    data: str = typer.Option("omniglot", metavar="DATA", help="'omniglot' or a path to a class-grouped .npz or an "
                                                              "image folder (root/<class>/*.png)."),
    split: str = typer.Option("vinyals", metavar="SPLIT", help="Omniglot protocol: vinyals or lake."),
    omniglot: Optional[Path] = typer.Option(None, metavar="FOLDER", parser=given_path,
                                            help="Folder with Omniglot's background.npz and "
                                                                         "evaluation.npz (default: $EDGEMETA_OMNIGLOT, "
                                                                         "then ../shared/data/omniglot)."),
    image_size: int = typer.Option(28, metavar="PIXELS", help="Backbone input size (square)."),
    ways: int = typer.Option(60, metavar="N", help="Classes per meta-training episode."),
    shots: int = typer.Option(1, metavar="K", help="Labelled support images per class in each episode."),
    queries: int = typer.Option(5, metavar="Q", help="Query images per class in each episode (the loss is "
                                                     "measured on them)."),
    episodes: Optional[int] = typer.Option(
        None, metavar="N", help=f"Maximum meta-training episodes. Default per rule: "
                                f"{_per_method('max_episodes', DEFAULT_MAX_EPISODES)}."),
    episodes_per_step: int = typer.Option(1, metavar="N", help="Episodes averaged per optimizer step."),
    meta: str = typer.Option("gradient", metavar="UPDATE", help="Meta-update: gradient (through the head) or reptile."),
    pretrain_steps: Optional[int] = typer.Option(
        None, metavar="N", help=f"Many-class classification steps before the episodes. Default per rule: "
                                f"{_per_method('pretrain_steps', 0)}."),
    augment: bool = typer.Option(False, help="Augment training images: glyphs get random shift/rotation/scale; photos get random resized crop, horizontal flip and colour jitter."),
    unsupervised: bool = typer.Option(False, help="Meta-train without labels: each task's classes are single "
                                                  "unlabelled training images, their shots and queries strongly "
                                                  "augmented copies (UMTRA); the data's class labels are ignored. "
                                                  "Validation classes (labelled) still select the checkpoint. "
                                                  "See docs/unsupervised.md."),
    cluster_from: Optional[Path] = typer.Option(
        None, metavar="RUN", parser=given_path, help="With --unsupervised: episodes from pseudo-classes, k-means "
                                                      "clusters (--clusters) of the training images' embeddings under "
                                                      "this earlier unsupervised run's weights (CACTUs)."),
    clusters: int = typer.Option(0, metavar="K", help="Pseudo-classes for --cluster-from."),
    lr: float = typer.Option(1e-3, metavar="RATE", help="Adam learning rate."),
    meta_lr: Optional[float] = typer.Option(None, metavar="RATE", help="Adam rate of the episodic phase "
                                                                       "(default: --lr), e.g. lower after pre-training."),
    lr_halve_every: int = typer.Option(2_000, metavar="N", help="Steps between learning-rate halvings."),
    val_every: int = typer.Option(1_000, metavar="N", help="Episodes (or pre-training steps) between validations."),
    val_episodes: int = typer.Option(400, metavar="N", help="Episodes per validation."),
    val_ways: int = typer.Option(5, metavar="N", help="Validation episodes' ways (model selection)."),
    val_shots: int = typer.Option(1, metavar="K", help="Validation episodes' shots."),
    val_report_shots: Optional[list[int]] = typer.Option(None, metavar="K", help="Also measure (never select on) "
                                                                                 "this many shots; repeatable."),
    patience: int = typer.Option(6, metavar="N", help="Stop a phase after this many validations without improvement."),
    val_fraction: float = typer.Option(0.15, metavar="FRACTION", help="Classes held out for validation "
                                                                      "(--data datasets)."),
    method_kwargs: Optional[str] = typer.Option(
        None, metavar="JSON", help=f"Settings of the rule, merged over its defaults: {_method_kwargs_defaults()}."),
    backbone_kwargs: Optional[str] = typer.Option(None, metavar="JSON", help='e.g. \'{"final_pool": false}\' for '
                                                                             'conv4 (576-d embedding).'),
    seed: int = typer.Option(0, metavar="N", help="Seed of the episodes and the initial weights."),
    device: str = typer.Option("auto", metavar="DEVICE", help="cpu, cuda or auto."),
    amp: bool = typer.Option(False, help="bf16 autocast (CUDA, or a CPU with bf16 units); check accuracy."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last checkpoint (with its own "
                                            "settings; other flags are ignored)."),
    overwrite: bool = typer.Option(False, help="Replace a run that --out already holds (its files are removed "
                                               "first)."),
    init_from: Optional[Path] = typer.Option(
        None, metavar="RUN", parser=given_path, help="Start from another run's best weights (same rule and backbone); a new run with "
                                  "its own optimizer, schedule and episodes (e.g. to continue a GPU run with a lower "
                                  "--lr)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Meta-train a backbone and adaptation rule on episodes; keep the best-validation weights.

    Needs the workstation extra: pip install torch==2.13.0 && pip install 'edgemeta\\[train]'.
    Several processes: `torchrun --nproc_per_node N -m edgemeta.cli train ...` (gloo on CPU, nccl on GPU).
    """
    from edgemeta.data.omniglot import SPLITS
    from edgemeta.data.sources import training_sets
    from edgemeta.train.method_specs import method_spec

    if task != "classification":
        from edgemeta.train.regression.train_command import train_task
        train_task(task, out, method, episodes, lr, seed, _json_object(method_kwargs, "--method-kwargs"), resume,
                   overwrite, typer.echo)
        return
    if not data:
        raise InputError("--data is empty; expected 'omniglot' or the path of a class-grouped .npz or image folder")
    if resume:
        if overwrite:
            raise InputError("--resume continues the run in --out and --overwrite replaces it; pass one of them")
        _resume(out, omniglot, val_fraction, progress)
        return
    _prepare_out(out, overwrite)
    method_spec(method)                                             # an unknown rule lists the known ones
    if data == "omniglot" and split not in SPLITS:
        raise InputError(f"unknown Omniglot split {split!r}; expected one of {SPLITS}")
    from edgemeta.train.trainer import TrainConfig, meta_train      # torch from here on

    given = {"max_episodes": episodes, "pretrain_steps": pretrain_steps}      # None: the rule's default
    cfg = TrainConfig.for_method(
        method, **{k: v for k, v in given.items() if v is not None}, backbone=backbone, dataset=data, split=split,
        image_size=(image_size, image_size), ways=ways, shots=shots, queries=queries,
        episodes_per_step=episodes_per_step, meta=meta, augment=augment, unsupervised=unsupervised, lr=lr,
        cluster_from=str(cluster_from) if cluster_from else None, clusters=clusters,
        lr_halve_every=lr_halve_every,
        val_every=val_every, val_episodes=val_episodes, val_ways=val_ways, val_shots=val_shots, patience=patience,
        meta_lr=meta_lr, val_report_shots=tuple(val_report_shots or ()),
        seed=seed, device=device, amp=amp, method_kwargs=_json_object(method_kwargs, "--method-kwargs"),
        backbone_kwargs=_json_object(backbone_kwargs, "--backbone-kwargs"),
        init_from=str(init_from) if init_from else None)
    train_set, val_set, prov = training_sets(data, split, cfg.image_size, omniglot, val_fraction, seed)
    _check_episode_classes(cfg, train_set, val_set, val_fraction)
    if cfg.unsupervised:
        from edgemeta.data.unsupervised_tasks import unsupervised_provenance
        prov = {**prov, **unsupervised_provenance(train_set.n_images, cfg.cluster_from, cfg.clusters)}
    rec = meta_train(cfg, train_set, val_set, out, provenance=prov, progress=progress)
    b = rec["best"]
    typer.echo(f"best val {b['val_acc']:.2f} ± {b['val_ci95']:.2f} at {b['phase']} step {b['step']}; "
               f"{rec['episodes']} episodes in {rec['train_seconds']:.0f}s -> {out}")


def _check_episode_classes(cfg: Any, train_set: Any, val_set: Any, val_fraction: float) -> None:
    """Refuse a split with too few classes for the run's episodes before any training starts."""
    from edgemeta.data.sources import check_episode_classes, split_origin

    check_episode_classes(train_set, val_set, split_origin(cfg.dataset, train_set, val_set, val_fraction),
                          cfg.ways, cfg.shots, cfg.queries, cfg.val_ways,
                          max((cfg.val_shots, *cfg.val_report_shots)), cfg.val_queries, cfg.unsupervised)


def _resume(out: Path, omniglot: Optional[Path], val_fraction: float, progress: bool) -> None:
    """``train --resume``: continue the run in ``out`` with the settings it recorded."""
    from edgemeta.data.sources import training_sets
    from edgemeta.train.checkpoint import load_json
    from edgemeta.train.trainer import TrainConfig, meta_train

    if not (out / "run.json").is_file():
        raise InputError(f"--resume: {out} has no run.json; start the run without --resume")
    cfg = TrainConfig.from_json(load_json(out / "run.json")["config"])
    train_set, val_set, prov = training_sets(cfg.dataset, cfg.split, cfg.image_size, omniglot, val_fraction, cfg.seed)
    _check_episode_classes(cfg, train_set, val_set, val_fraction)
    rec = meta_train(cfg, train_set, val_set, out, provenance=prov, progress=progress, resume=True)
    typer.echo(f"resumed and finished: best val {rec['best']['val_acc']:.2f} -> {out}")


# --------------------------------------------------------------------------------------------- export
@command()
def export(
    run: Path = typer.Argument(..., metavar="RUN", help="Run folder from `edgemeta train`."),
    out: Path = typer.Argument(..., metavar="BUNDLE", help="Bundle folder to write."),
    omniglot: Optional[Path] = typer.Option(None, metavar="FOLDER", help="Omniglot folder (validation classes for "
                                                                         "the parity check and the metrics)."),
    zip_to: Optional[Path] = typer.Option(None, "--zip", metavar="FILE", help="Also pack the bundle into this .zip."),
    int8: bool = typer.Option(False, "--int8", help="Also write backbone.int8.onnx if it is within 0.3 points of fp32 on "
                                                    "validation; it becomes the default precision only if it is also "
                                                    "at least 1.2x faster here (both figures go in the manifest)."),
    method: Optional[str] = typer.Option(None, metavar="RULE", help="Put another rule's head (default settings) on "
                                                                    "the run's backbone."),
    shift_views: int = typer.Option(1, metavar="VIEWS", help="1, 5 or 9: embed each image as the mean over that many "
                                                             "one-pixel shifts (baked into backbone.onnx; costs that "
                                                             "many backbone passes)."),
) -> None:
    """Export a run to a bundle; refuses if onnxruntime and torch disagree. Progress goes to stderr.

    Needs the workstation extra: pip install torch==2.13.0 && pip install 'edgemeta\\[train]'.
    """
    from edgemeta.contract.bundle import zip_bundle
    from edgemeta.data.sources import training_sets
    from edgemeta.train.export import export_bundle, load_run
    from edgemeta.train.regression.train_command import export_task, is_regression_run
    from edgemeta.train.trainer import TrainConfig

    if is_regression_run(run):
        export_task(run, out, typer.echo)
        return
    start = time.perf_counter()
    _, record = load_run(run)
    cfg = TrainConfig.from_json(record["config"])
    _echo_err(f"export {run}: loading its meta-training and validation classes")
    train_set, val_set, _ = training_sets(cfg.dataset, cfg.split, cfg.image_size, omniglot, seed=cfg.seed)
    manifest = export_bundle(run, out, val_set, int8_calibration=train_set if int8 else None, method=method,
                             shift_views=shift_views, progress=_echo_err)
    if zip_to:
        zip_bundle(out, zip_to)
    _echo_err(f"export {run}: done in {time.perf_counter() - start:.0f}s")
    v = manifest["validation"]
    gate = manifest.get("precision", {}).get("int8")
    if gate is not None:
        verdict = "kept" if gate["passed"] else "REFUSED (not written)"
        typer.echo(f"int8 backbone {verdict}: val 5w1s fp32 {gate['fp32_accuracy']:.2f} vs int8 "
                   f"{gate['int8_accuracy']:.2f} (drop {gate['drop']:.2f}, limit {gate['max_drop']})",
                   err=not gate["passed"])
    parity = max(manifest["parity"]["embedding_max_abs_random"], manifest["parity"]["embedding_max_abs_episodes"])
    typer.echo(f"wrote {out}: val 5w1s {v['5w1s']['accuracy']:.2f} ± {v['5w1s']['ci95']:.2f}, "
               f"parity max |Δembedding| {parity:.2g}")


# -------------------------------------------------------------------------------------------- distill
@command()
def distill(
    teacher: Path = typer.Argument(..., metavar="TEACHER", help="Grey conv4 proto bundle whose embedding the "
                                                                "student learns (e.g. a shift-view bundle)."),
    out: Path = typer.Option(..., "--out", metavar="RUN", parser=given_path, help="Run folder (run.json, best.npz, "
                                                                                  "checkpoints); `edgemeta export` ships it."),
    episodes: int = typer.Option(2_000, metavar="N", help="Training episodes (one Adam step each)."),
    ways: int = typer.Option(60, metavar="N", help="Classes per training episode."),
    lr: float = typer.Option(1e-4, metavar="RATE", help="Adam learning rate."),
    lr_halve_every: int = typer.Option(1_000, metavar="N", help="Episodes between learning-rate halvings."),
    distill_weight: float = typer.Option(100.0, metavar="W", help="Weight of the relative embedding error next to "
                                                                 "the episode cross-entropy."),
    val_every: int = typer.Option(200, metavar="N", help="Episodes between validations."),
    val_episodes: int = typer.Option(600, metavar="N", help="20-way 1-shot validation episodes."),
    patience: int = typer.Option(6, metavar="N", help="Stop after this many validations without improvement."),
    seed: int = typer.Option(0, metavar="N", help="Seed of the episodes and the augmentation."),
    widths: Optional[str] = typer.Option(None, metavar="A,B,C,D", help="The student's four channel counts, e.g. "
                                         "64,64,320,64: its inner layers widened function-preserving from the "
                                         "teacher's (the last stays the teacher's). Default: the teacher's."),
    widen_noise: float = typer.Option(0.05, metavar="X", help="Symmetry-breaking noise of the widening, relative "
                                                             "to the next layer's weight spread."),
    omniglot: Optional[Path] = typer.Option(None, metavar="FOLDER", help="Omniglot folder."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last checkpoint (same settings)."),
) -> None:
    """Distil a bundle's embedding into a single-view conv4 (one backbone pass per image).

    The student starts from the teacher's own convolutions and learns, on augmented meta-training
    episodes, to reproduce the teacher's embedding and to classify with its head; the weights best
    on validation episodes are kept. Then: edgemeta export RUN BUNDLE --int8.
    """
    from edgemeta.train.distill import DistillConfig, parse_widths, run_distill

    cfg = DistillConfig(teacher=str(teacher), ways=ways, episodes=episodes, lr=lr, lr_halve_every=lr_halve_every,
                        distill_weight=distill_weight, val_every=val_every, val_episodes=val_episodes,
                        patience=patience, seed=seed, widths=parse_widths(widths), widen_noise=widen_noise)
    rec = run_distill(cfg, out, omniglot, resume)
    b = rec["best"]
    typer.echo(f"best val {b['val_acc']:.2f} ± {b['val_ci95']:.2f} at episode {b['step']} (teacher "
               f"{rec['teacher_val']['val_acc']:.2f}); {rec['episodes']} episodes in {rec['train_seconds']:.0f}s -> {out}")


@command("add-refine")
def add_refine(
    bundle: Path = typer.Argument(..., metavar="BUNDLE", help="A proto bundle (folder or .zip)."),
    out: Path = typer.Argument(..., metavar="OUT", help="Bundle folder to write (not BUNDLE itself)."),
    omniglot: Optional[Path] = typer.Option(None, metavar="FOLDER", help="Omniglot folder (the bundle's validation "
                                                                         "classes fit the distractor mask)."),
    val: Optional[Path] = typer.Option(None, "--val", metavar="FOLDER", help="Validation classes to fit the mask on "
                                       "(one sub-folder of images per class; never test classes). Default: Omniglot's "
                                       "validation part of the bundle's split, or the val/ folder beside its train/."),
    max_unlabeled: int = typer.Option(1000, metavar="N", help="Unlabelled embeddings a device keeps (the most "
                                                              "recent); written as refine.max_unlabeled."),
    fit_steps: int = typer.Option(300, metavar="N", help="Adam steps fitting the mask on validation episodes."),
    seed: int = typer.Option(0, metavar="N", help="Seed of the fitting episodes."),
) -> None:
    """Add semi-supervised refinement to a proto bundle: OUT holds every file of BUNDLE byte for byte, plus
    refine.onnx (masked soft k-means, fitted and parity-checked) and the manifest's refine section (format
    version 3). See docs/semi-supervised.md. Needs the workstation extra (torch)."""
    from edgemeta.contract.bundle import read_bundle
    from edgemeta.train.refine_export import add_refine as write_refine
    from edgemeta.train.refine_export import validation_classes

    m, _ = read_bundle(bundle)
    classes, where = validation_classes(m, omniglot, val)
    new = write_refine(bundle, out, classes, max_unlabeled=max_unlabeled, fit_steps=fit_steps, seed=seed,
                       calibrated_on=where, log=_echo_err)
    d = new["refine"]["distractor"]
    typer.echo(f"wrote {out}: format version {new['format_version']}, refine.onnx (mask beta {d['beta']:.3f}, "
               f"gamma {d['gamma']:.2f}; parity max |Δ| {new['refine']['parity']['prototypes_max_abs']:.2g})")


# ------------------------------------------------------------------------------- eval, inspect, bench
@command("eval")
def evaluate(
    bundle: Path = typer.Argument(..., metavar="BUNDLE", help=BUNDLE_HELP),
    ways: int = typer.Option(5, metavar="N", help="Classes per test episode."),
    shots: int = typer.Option(1, metavar="K", help="Support images per class."),
    queries: int = typer.Option(15, metavar="Q", help="Query images per class."),
    episodes: int = typer.Option(1000, metavar="N", help="Test episodes (mean ± 95% CI over them)."),
    seed: int = typer.Option(0, metavar="N", help="Seed of the episodes."),
    data: Optional[Path] = typer.Option(None, metavar="DATA", help="Test classes (.npz or image folder) instead of "
                                                                   "Omniglot's."),
    omniglot: Optional[Path] = typer.Option(None, metavar="FOLDER", help="Omniglot folder."),
    split: Optional[str] = typer.Option(None, metavar="SPLIT", help="Omniglot protocol; default: the bundle's own."),
    rotations: Optional[bool] = typer.Option(
        None, "--rotations/--no-rotations",
        help="Omniglot: add test characters rotated by 90/180/270 degrees as classes. Default as the "
             "literature: on for vinyals (1,692 classes), off for lake."),
    threads: int = typer.Option(1, metavar="N", help="onnxruntime intra-op threads."),
    precision: str = typer.Option("auto", metavar="PRECISION", help="auto (int8 if the bundle has it), fp32 or int8."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: ways, shots, queries, episodes, "
                                                       "precision, accuracy and ci95 (%), seconds, classes, split, "
                                                       "bundle, method; with --figure also figure: path, "
                                                       "episode, right, queries."),
    figure: Optional[Path] = typer.Option(None, metavar="FILE", help="Also draw the first episode as a PNG: the "
                                                                     "support images (a row per class) and each "
                                                                     "query with its predicted label, green if right, "
                                                                     "red if wrong (needs matplotlib)."),
    unlabeled: Optional[int] = typer.Option(None, "--unlabeled", metavar="M", help="Semi-supervised episodes: M more "
                                            "images of each class without labels; reports labelled-only and refined "
                                            "accuracy in the same episodes (bundles with a refine graph; "
                                            "docs/semi-supervised.md)."),
    distractors: int = typer.Option(0, "--distractors", metavar="D", help="With --unlabeled: D more classes of none "
                                                                          "of the episode's labels, M unlabelled "
                                                                          "images each."),
    support: Optional[list[int]] = typer.Option(None, "--support", metavar="K", help="Regression bundles: support "
                                                "points per task; repeatable (default 5, 10 and 20). --episodes is "
                                                "the number of tasks; prints mse and ci95 per K."),
    query_points: int = typer.Option(100, metavar="Q", help="Regression bundles: query points per task."),
) -> None:
    """Episodic accuracy through the device runtime on classes never seen in meta-training; for a regression
    bundle, the query MSE on new sinusoid tasks (docs/regression.md)."""
    from edgemeta.data.sources import evaluation_set
    from edgemeta.evaluation import evaluate_episodes
    from edgemeta.runtime.loaded_bundle import Bundle

    if figure is not None:
        from edgemeta.episode_figure import require_matplotlib

        require_matplotlib()                    # before any work: the install line at once
    from edgemeta.regression_cli import is_regression_bundle, report_regression

    if is_regression_bundle(bundle):
        typer.echo(report_regression(bundle, support, query_points, episodes, seed, threads, as_json))
        return
    b = Bundle.load(bundle, threads=threads, precision=precision)
    test, name = evaluation_set(b.manifest["provenance"], b.preprocess_spec, data, omniglot, split,
                                rotations=rotations)
    if unlabeled is not None or distractors:
        from edgemeta.semisupervised_eval import report_semi

        typer.echo(report_semi(b, test, name, str(bundle), ways, shots, queries, unlabeled or 0, distractors,
                               episodes, seed, as_json, figure))
        return
    res = evaluate_episodes(b, test, ways, shots, queries, episodes, seed)
    res.update({"split": name, "bundle": str(bundle), "method": b.method})
    if figure is not None:
        from edgemeta.episode_figure import draw_episode

        drawn = draw_episode(b, test, ways, shots, queries, figure, seed, 0, name)
        res["figure"] = {"path": str(figure), "episode": 0, "right": int(drawn.correct.sum()),
                         "queries": int(drawn.correct.size)}
    if as_json:
        typer.echo(json.dumps(res))
    else:
        typer.echo(f"{b.method} on {name}: {ways}-way {shots}-shot {queries}-query, {episodes} episodes, "
                   f"{res['precision']}: {res['accuracy']:.2f} ± {res['ci95']:.2f} % ({res['seconds']:.1f}s)")
        if figure is not None:
            f = res["figure"]
            typer.echo(f"figure: {figure} (episode 0: {f['right']} of {f['queries']} queries right)")


@command()
def inspect(bundle: Path = typer.Argument(..., metavar="BUNDLE", help=BUNDLE_HELP),
            as_json: bool = typer.Option(False, "--json", help="Print the verified manifest as JSON.")) -> None:
    """Verify a bundle and describe it."""
    from edgemeta.contract.bundle import read_bundle

    m, _ = read_bundle(bundle)
    if as_json:
        typer.echo(json.dumps(m, indent=2))
        return
    p = m["provenance"]
    typer.echo(f"{bundle}: {m['format']} v{m['format_version']} (verified: every sha256 matches)")
    typer.echo(f"  method     {m['method']}  head {json.dumps({k: v for k, v in m['head'].items() if k != 'method'})}")
    typer.echo(f"  input      {m['input']['shape']} {m['input'].get('dtype', 'float32')}  preprocess {json.dumps(m['preprocess'])}")
    typer.echo(f"  embedding  {m['embedding']['dim']}   backbone {p.get('backbone')}")
    typer.echo(f"  trained    {_training_line(p)}")
    for k, v in m["validation"].items():
        if isinstance(v, dict):
            typer.echo(f"  val {k:6s} {_validation_line(v)}")
    for name, f in m["files"].items():
        typer.echo(f"  {name:16s} {f['bytes']:>9,d} B  sha256 {f['sha256'][:16]}…")


def _training_line(p: dict) -> str:
    """What trained a bundle, from its provenance: episodes (classifiers) or steps (regression)."""
    amount = (f"{p['train_episodes']} episodes" if p.get("train_episodes") is not None
              else f"{p['train_steps']} steps" if p.get("train_steps") is not None else "length not recorded")
    where = f" on {p['train_device']}" if p.get("train_device") else ""
    return f"{p.get('dataset')} / {p.get('split')}, {amount}, {p.get('train_seconds')}s{where}"


def _validation_line(v: dict) -> str:
    """One validation record: accuracy over episodes (classifiers) or MSE over tasks (regression)."""
    if "mse" in v:
        return f"mse {v['mse']:.3g} ± {v['ci95']:.2g} ({v['tasks']} tasks, {v['support']} support points)"
    return f"{v['accuracy']:.2f} ± {v['ci95']:.2f} ({v['episodes']} episodes)"


@command()
def bench(
    bundle: Path = typer.Argument(..., metavar="BUNDLE", help=BUNDLE_HELP),
    threads: int = typer.Option(1, metavar="N", min=1, help="onnxruntime intra-op threads."),
    repeats: int = typer.Option(50, metavar="N", min=1, help="Timed runs per figure (after warm-up); the median is reported."),
    cold_runs: int = typer.Option(5, metavar="N", min=1, help="Fresh processes per cold-start figure (median)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Device latency and memory on this machine: cold start, embed, adapt, predict; for a colour
    bundle also photos: embed one photo, adapt 5-way 5-shot from JPEG files, decode a 4032x3024 JPEG."""
    from edgemeta.bench import format_bench, run_bench

    res = run_bench(str(bundle), threads, repeats, cold_runs=cold_runs)
    typer.echo(json.dumps(res) if as_json else format_bench(res))

