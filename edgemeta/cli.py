"""The ``edgemeta`` command line: train, export, eval, inspect."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Meta-train on a workstation, adapt on the device. See README.md.")


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command()
def train(
    out: Path = typer.Option(..., "--out", help="Run directory (run.json + best.npz are written here)."),
    method: str = typer.Option("proto", help="Adaptation rule: proto, metasgd, ridge or finetune."),
    backbone: str = typer.Option("conv4", help="Backbone name (conv4, mlp)."),
    data: str = typer.Option("omniglot", help="'omniglot' or a path to a class-grouped .npz / image folder."),
    split: str = typer.Option("vinyals", help="Omniglot protocol: vinyals or lake."),
    omniglot: Optional[Path] = typer.Option(None, help="Folder with Omniglot's background.npz/evaluation.npz."),
    image_size: int = typer.Option(28, help="Backbone input size (square)."),
    ways: int = typer.Option(60), shots: int = typer.Option(1), queries: int = typer.Option(5),
    episodes: Optional[int] = typer.Option(None, help="Maximum meta-training episodes (default per method)."),
    episodes_per_step: int = typer.Option(1, help="Episodes averaged per optimizer step."),
    meta: str = typer.Option("gradient", help="Meta-update: gradient (through the head) or reptile."),
    pretrain_steps: Optional[int] = typer.Option(None, help="Many-class classification steps before episodes."),
    augment: bool = typer.Option(False, help="Random shift/rotation/scale of training images."),
    lr: float = typer.Option(1e-3), lr_halve_every: int = typer.Option(2_000, help="Steps between LR halvings."),
    val_every: int = typer.Option(1_000), val_episodes: int = typer.Option(400),
    val_ways: int = typer.Option(5, help="Validation episodes' ways (model selection)."),
    val_shots: int = typer.Option(1, help="Validation episodes' shots."),
    patience: int = typer.Option(6, help="Stop a phase after this many validations without improvement."),
    val_fraction: float = typer.Option(0.15, help="Classes held out for validation (user datasets)."),
    method_kwargs: Optional[str] = typer.Option(None, help='JSON, e.g. \'{"steps": 5}\' for metasgd.'),
    backbone_kwargs: Optional[str] = typer.Option(None, help='JSON, e.g. \'{"final_pool": false}\' for conv4.'),
    seed: int = typer.Option(0), device: str = typer.Option("auto", help="cpu, cuda or auto."),
    amp: bool = typer.Option(False, help="bf16 autocast (CUDA, or a CPU with bf16 units); check accuracy."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last checkpoint (its own config)."),
    init_from: Optional[Path] = typer.Option(
        None, help="Start from another run's best weights (same method and backbone); a new run with its own "
                   "optimizer, schedule and episodes (e.g. to continue a GPU run with a lower --lr)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Meta-train a backbone and adaptation rule on episodes; keep the best-validation weights.

    Several processes: `torchrun --nproc_per_node N -m edgemeta.cli train ...` (gloo on CPU, nccl on GPU).
    """
    from edgemeta.data.sources import training_sets
    from edgemeta.train.checkpoint import load_json
    from edgemeta.train.trainer import METHOD_DEFAULTS, TrainConfig, meta_train

    if resume:
        try:
            record = load_json(out / "run.json")
        except FileNotFoundError:
            _fail(f"--resume: {out} has no run.json; start the run without --resume")
        cfg = TrainConfig.from_json(record["config"])
        try:
            train_set, val_set, prov = training_sets(cfg.dataset, cfg.split, cfg.image_size, omniglot, val_fraction,
                                                     cfg.seed)
            rec = meta_train(cfg, train_set, val_set, out, provenance=prov, progress=progress, resume=True)
        except (ValueError, FileNotFoundError) as exc:
            _fail(str(exc))
        typer.echo(f"resumed and finished: best val {rec['best']['val_acc']:.2f} -> {out}")
        return

    if method not in METHOD_DEFAULTS:
        _fail(f"unknown method {method!r}; expected one of {sorted(METHOD_DEFAULTS)}")
    defaults = METHOD_DEFAULTS[method]
    try:
        mk = {**defaults.get("method_kwargs", {}), **(json.loads(method_kwargs) if method_kwargs else {})}
        bk = json.loads(backbone_kwargs) if backbone_kwargs else {}
    except json.JSONDecodeError as exc:
        _fail(f"--method-kwargs / --backbone-kwargs must be JSON objects: {exc}")
    cfg = TrainConfig(method=method, backbone=backbone, dataset=data, split=split, image_size=(image_size, image_size),
                      ways=ways, shots=shots, queries=queries, episodes_per_step=episodes_per_step,
                      max_episodes=episodes if episodes is not None else defaults.get("max_episodes", 40_000),
                      pretrain_steps=pretrain_steps if pretrain_steps is not None else defaults.get("pretrain_steps", 0),
                      meta=meta, augment=augment, lr=lr, lr_halve_every=lr_halve_every, val_every=val_every,
                      val_episodes=val_episodes, val_ways=val_ways, val_shots=val_shots, patience=patience,
                      seed=seed, device=device, amp=amp, method_kwargs=mk, backbone_kwargs=bk,
                      init_from=str(init_from) if init_from else None)
    try:
        train_set, val_set, prov = training_sets(data, split, cfg.image_size, omniglot, val_fraction, seed)
        rec = meta_train(cfg, train_set, val_set, out, provenance=prov, progress=progress)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        _fail(str(exc))
    b = rec["best"]
    typer.echo(f"best val {b['val_acc']:.2f} ± {b['val_ci95']:.2f} at {b['phase']} step {b['step']}; "
               f"{rec['episodes']} episodes in {rec['train_seconds']:.0f}s -> {out}")


@app.command()
def export(
    run: Path = typer.Argument(..., help="Run directory from `edgemeta train`."),
    out: Path = typer.Argument(..., help="Bundle directory to write."),
    omniglot: Optional[Path] = typer.Option(None, help="Omniglot folder (for parity and validation episodes)."),
    zip_to: Optional[Path] = typer.Option(None, "--zip", help="Also pack the bundle into this .zip file."),
    int8: bool = typer.Option(False, "--int8", help="Also write backbone.int8.onnx if it passes the accuracy gate."),
    method: Optional[str] = typer.Option(None, help="Put another rule's head (default settings) on the run's backbone."),
    shift_views: int = typer.Option(1, help="1, 5 or 9: embed each image as the mean over that many one-pixel "
                                             "shifts (baked into backbone.onnx; costs that many backbone passes)."),
) -> None:
    """Export a run to a bundle; refuses if onnxruntime and torch disagree."""
    from edgemeta.contract.bundle import zip_bundle
    from edgemeta.data.sources import training_sets
    from edgemeta.train.export import ExportError, export_bundle, load_run
    from edgemeta.train.trainer import TrainConfig

    try:
        _, record = load_run(run)
        cfg = TrainConfig.from_json(record["config"])
        train_set, val_set, _ = training_sets(cfg.dataset, cfg.split, cfg.image_size, omniglot, seed=cfg.seed)
        manifest = export_bundle(run, out, val_set, int8_calibration=train_set if int8 else None, method=method,
                                 shift_views=shift_views)
    except (ExportError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    if zip_to:
        zip_bundle(out, zip_to)
    v = manifest["validation"]
    gate = manifest.get("precision", {}).get("int8")
    if gate is not None:
        verdict = "kept" if gate["passed"] else "REFUSED (not written)"
        typer.echo(f"int8 backbone {verdict}: val 5w1s fp32 {gate['fp32_accuracy']:.2f} vs int8 "
                   f"{gate['int8_accuracy']:.2f} (drop {gate['drop']:.2f}, limit {gate['max_drop']})",
                   err=not gate["passed"])
    typer.echo(f"wrote {out}: val 5w1s {v['5w1s']['accuracy']:.2f} ± {v['5w1s']['ci95']:.2f}, "
               f"parity max |Δembedding| {max(manifest['parity']['embedding_max_abs_random'], manifest['parity']['embedding_max_abs_episodes']):.2g}")


@app.command("eval")
def evaluate(
    bundle: Path = typer.Argument(..., help="Bundle directory or .zip."),
    ways: int = typer.Option(5), shots: int = typer.Option(1), queries: int = typer.Option(15),
    episodes: int = typer.Option(1000), seed: int = typer.Option(0),
    data: Optional[Path] = typer.Option(None, help="Test classes (.npz or image folder) instead of Omniglot's."),
    omniglot: Optional[Path] = typer.Option(None, help="Omniglot folder."),
    split: Optional[str] = typer.Option(None, help="Omniglot protocol; default: the bundle's own."),
    rotations: Optional[bool] = typer.Option(
        None, "--rotations/--no-rotations",
        help="Omniglot: add test characters rotated by 90/180/270 degrees as classes. Default as the "
             "literature: on for vinyals (1,692 classes), off for lake."),
    threads: int = typer.Option(1, help="onnxruntime intra-op threads."),
    precision: str = typer.Option("auto", help="auto (int8 if the bundle has it), fp32 or int8."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Episodic accuracy through the device runtime on classes never seen in meta-training."""
    from edgemeta.contract.bundle import BundleError
    from edgemeta.data.sources import evaluation_set
    from edgemeta.evaluation import evaluate_episodes
    from edgemeta.runtime.loaded_bundle import Bundle

    try:
        b = Bundle.load(bundle, threads=threads, precision=precision)
        test, name = evaluation_set(b.manifest["provenance"], b.preprocess_spec, data, omniglot, split,
                                    rotations=rotations)
        res = evaluate_episodes(b, test, ways, shots, queries, episodes, seed)
    except (BundleError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    res.update({"split": name, "bundle": str(bundle), "method": b.method})
    if as_json:
        typer.echo(json.dumps(res))
    else:
        typer.echo(f"{b.method} on {name}: {ways}-way {shots}-shot {queries}-query, {episodes} episodes, "
                   f"{res['precision']}: {res['accuracy']:.2f} ± {res['ci95']:.2f} % ({res['seconds']:.1f}s)")


@app.command()
def inspect(bundle: Path = typer.Argument(..., help="Bundle directory or .zip."),
            as_json: bool = typer.Option(False, "--json", help="Print the verified manifest as JSON.")) -> None:
    """Verify a bundle and describe it."""
    from edgemeta.contract.bundle import BundleError, read_bundle

    try:
        m, _ = read_bundle(bundle)
    except BundleError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(m, indent=2))
        return
    p = m["provenance"]
    typer.echo(f"{bundle}: {m['format']} v{m['format_version']} (verified: every sha256 matches)")
    typer.echo(f"  method     {m['method']}  head {json.dumps({k: v for k, v in m['head'].items() if k != 'method'})}")
    typer.echo(f"  input      {m['input']['shape']} {m['input']['dtype']}  preprocess {json.dumps(m['preprocess'])}")
    typer.echo(f"  embedding  {m['embedding']['dim']}   backbone {p.get('backbone')}")
    typer.echo(f"  trained    {p.get('dataset')} / {p.get('split')}, {p.get('train_episodes')} episodes, "
               f"{p.get('train_seconds')}s on {p.get('train_device')}")
    for k, v in m["validation"].items():
        if isinstance(v, dict):
            typer.echo(f"  val {k:6s} {v['accuracy']:.2f} ± {v['ci95']:.2f} ({v['episodes']} episodes)")
    for name, f in m["files"].items():
        typer.echo(f"  {name:16s} {f['bytes']:>9,d} B  sha256 {f['sha256'][:16]}…")


@app.command()
def bench(
    bundle: Path = typer.Argument(..., help="Bundle directory or .zip."),
    threads: int = typer.Option(1, help="onnxruntime intra-op threads."),
    repeats: int = typer.Option(50, help="Timed runs per figure (after warm-up); the median is reported."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Device latency and memory on this machine: cold start, embed, adapt, predict."""
    from edgemeta.bench import format_bench, run_bench
    from edgemeta.contract.bundle import BundleError

    try:
        res = run_bench(str(bundle), threads, repeats)
    except BundleError as exc:
        _fail(str(exc))
    typer.echo(json.dumps(res) if as_json else format_bench(res))


def _state_key(key_env: Optional[str]) -> Optional[bytes]:
    """The state encryption key from an environment variable holding 64 hex digits."""
    if not key_env:
        return None
    import os

    val = os.environ.get(key_env)
    if not val:
        _fail(f"--key-env {key_env}: that environment variable is not set")
    try:
        key = bytes.fromhex(val)
    except ValueError:
        _fail(f"{key_env} must hold 64 hex digits (a 32-byte AES-256 key)")
    if len(key) != 32:
        _fail(f"{key_env} must hold 64 hex digits (a 32-byte AES-256 key), got {len(key)} bytes")
    return key


_KEY_HELP = "Environment variable holding a 64-hex-digit key: encrypt the state at rest (AES-256-GCM)."


@app.command()
def adapt(
    bundle: Path = typer.Argument(..., help="Bundle directory or .zip."),
    support: Path = typer.Option(..., help="Folder with one sub-folder of images per class (its name is the label)."),
    state: Path = typer.Option(..., help="Private state file; created, or added to if it exists."),
    ink: str = typer.Option("auto", help="high (bright strokes), low (dark strokes) or auto."),
    key_env: Optional[str] = typer.Option(None, help=_KEY_HELP),
) -> None:
    """Learn (more of) the classes in SUPPORT on the device and save the private state."""
    from edgemeta.contract.bundle import BundleError
    from edgemeta.contract.preprocess import InputError
    from edgemeta.data.files import list_class_folders, read_image_file, resolve_ink
    from edgemeta.runtime.classifier import FewShotClassifier
    from edgemeta.runtime.state import StateError

    key = _state_key(key_env)
    try:
        classes = list_class_folders(support)
        images = [read_image_file(f) for _, files in classes for f in files]
        labels = [name for name, files in classes for _ in files]
        clf = FewShotClassifier.load_or_new(bundle, state, key)
        clf.ink = resolve_ink(images, ink)
        clf.partial_fit(images, labels)
        clf.save(state, key)
    except (BundleError, InputError, StateError) as exc:
        _fail(str(exc))
    counts = clf.class_counts()
    typer.echo(f"{state}: {len(counts)} classes " + ", ".join(f"{k} ({v})" for k, v in counts.items()))


@app.command()
def predict(
    bundle: Path = typer.Argument(..., help="Bundle directory or .zip."),
    images: list[Path] = typer.Argument(..., help="Image files to classify."),
    state: Path = typer.Option(..., help="Private state file written by `edgemeta adapt`."),
    unknown: bool = typer.Option(True, help="Answer 'unknown' below the bundle's calibrated threshold."),
    key_env: Optional[str] = typer.Option(None, help=_KEY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per image."),
) -> None:
    """Label and confidence for each image, from the saved state."""
    from edgemeta.contract.bundle import BundleError
    from edgemeta.contract.preprocess import InputError
    from edgemeta.data.files import read_image_file
    from edgemeta.runtime.classifier import FewShotClassifier, softmax
    from edgemeta.runtime.state import StateError

    key = _state_key(key_env)
    try:
        clf = FewShotClassifier.load(bundle, state, key)
        raw = [read_image_file(p) for p in images]
        logits = clf.decision_function(raw)
        labels = clf.predict(raw, reject_unknown=unknown) if unknown and clf.threshold_for(1) is not None \
            else clf.classes_[logits.argmax(1)]
    except (BundleError, InputError, StateError, OSError) as exc:
        _fail(str(exc))
    proba = softmax(logits)
    for path, label, p, lg in zip(images, labels, proba, logits):
        label = label.item() if hasattr(label, "item") else label
        if as_json:
            typer.echo(json.dumps({"image": str(path), "label": label, "confidence": round(float(p.max()), 4),
                                   "max_logit": round(float(lg.max()), 4)}))
        else:
            typer.echo(f"{path}\t{label}\t{p.max():.3f}")


@app.command()
def forget(
    bundle: Path = typer.Argument(..., help="Bundle directory or .zip."),
    label: str = typer.Argument(..., help="The class to remove, with every stored embedding of it."),
    state: Path = typer.Option(..., help="Private state file."),
    key_env: Optional[str] = typer.Option(None, help=_KEY_HELP),
) -> None:
    """Remove a class from the saved state (the user's right to be forgotten)."""
    from edgemeta.contract.bundle import BundleError
    from edgemeta.contract.preprocess import InputError
    from edgemeta.runtime.classifier import FewShotClassifier
    from edgemeta.runtime.state import StateError

    key = _state_key(key_env)
    try:
        clf = FewShotClassifier.load(bundle, state, key)
        known = clf.class_counts()
        target = next((k for k in known if str(k) == label), label)
        clf.forget(target)
        clf.save(state, key)
    except (BundleError, InputError, StateError) as exc:
        _fail(str(exc))
    typer.echo(f"forgot {label!r}; {state} now holds " + (", ".join(map(str, clf.class_counts())) or "no classes"))


@app.command()
def demo(
    bundle: Optional[Path] = typer.Option(None, help="Bundle (default: the shipped models/omniglot-conv4-proto)."),
    shots: int = typer.Option(5, help="Samples per digit the device learns from."),
    draws: int = typer.Option(100, help="Random support draws averaged (95% CI over them)."),
    figure: Optional[Path] = typer.Option(Path("edgemeta-demo.png"), help="PNG to write."),
    no_figure: bool = typer.Option(False, "--no-figure", help="Skip the figure (no matplotlib needed)."),
    omniglot: Optional[Path] = typer.Option(None, help="Omniglot folder (held-out characters for 'unknown')."),
    as_json: bool = typer.Option(False, "--json", help="Also print the figures as one JSON object."),
) -> None:
    """Learn scikit-learn's handwritten digits from 5 samples each on the shipped bundle."""
    from edgemeta.demo import DEFAULT_BUNDLE, run_demo

    try:
        res = run_demo(bundle or DEFAULT_BUNDLE, shots, draws, None if no_figure else figure, omniglot)
    except (RuntimeError, ValueError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(res))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
