"""Device commands of ``edgemeta``: adapt, predict, forget (the private state) and demo, all through
the device runtime (no torch)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import typer

from edgemeta.cli_app import BUNDLE_HELP, command, given_path
from edgemeta.errors import InputError


def _one_field(value: object) -> str:
    """``value`` as one tab-separated field: control characters (tab, newline, ...) written as ``\\xNN``
    so a class or file name cannot forge extra fields or lines."""
    return "".join(c if c.isprintable() or c == " " else f"\\x{ord(c):02x}" for c in str(value))


# ------------------------------------------------------------------------- device: adapt, predict, forget
def _state_key(key_env: Optional[str]) -> Optional[bytes]:
    """The state key from an environment variable holding 64 hex digits (32 bytes, AES-256)."""
    if not key_env:
        return None
    val = os.environ.get(key_env)
    if not val:
        raise InputError(f"--key-env {key_env}: that environment variable is not set")
    try:
        key = bytes.fromhex(val)
    except ValueError:
        raise InputError(f"{key_env} must hold 64 hex digits (a 32-byte AES-256 key)") from None
    if len(key) != 32:
        raise InputError(f"{key_env} must hold 64 hex digits (a 32-byte AES-256 key), got {len(key)} bytes")
    return key


def _image_files(paths: list[Path]) -> list[Path]:
    """The files to classify: each file as given, each folder's image files (sorted, not recursive)."""
    from edgemeta.contract.image_files import IMAGE_SUFFIXES, image_files_in

    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = image_files_in(p)
            if not found:
                raise InputError(f"{p} is a folder with no image files ({', '.join(IMAGE_SUFFIXES)})")
            out += found
        else:
            out.append(p)
    return out


def _support_ink(clf: Any, files: list[Path], ink: str) -> str:
    """The ink setting to store: for a grey bundle ``auto`` becomes ``low`` / ``high`` when every support
    image agrees (:func:`~edgemeta.data.files.resolve_ink`, files decoded one at a time); colour bundles
    have no ink, so the setting is kept as given (it has no effect)."""
    from edgemeta.contract.image_files import decode_image
    from edgemeta.contract.preprocess import check_spec, spec_channels
    from edgemeta.data.files import resolve_ink

    spec = clf.bundle.preprocess_spec
    if spec_channels(spec) != 1:
        return ink
    return resolve_ink((decode_image(f, check_spec(spec), 1) for f in files), ink)


def _regression_csv(bundle: Path, csv_file: Optional[Path]) -> bool:
    """Whether a command takes the regression path: a regression bundle (which needs --csv for adapt and
    predict) or --csv given (which needs a regression bundle)."""
    from edgemeta.regression_cli import is_regression_bundle

    regression = is_regression_bundle(bundle)
    if csv_file is not None and not regression:
        raise InputError(f"--csv is for regression bundles; {bundle} is a classifier (give image folders or files)")
    return regression


@command()
def adapt(
    bundle: Path = typer.Argument(..., metavar="BUNDLE", parser=given_path, help=BUNDLE_HELP),
    support: Optional[Path] = typer.Option(None, metavar="FOLDER", parser=given_path, help="Folder with one sub-folder of "
                                           "images per class (its name is the label). Optional with --unlabeled."),
    unlabeled: Optional[Path] = typer.Option(None, "--unlabeled", metavar="FOLDER", parser=given_path,
                                             help="Folder of images without labels (its image files, sorted; "
                                                  "sub-folders not read): they refine the prototypes (bundles with "
                                                  "a refine graph, docs/semi-supervised.md). The state keeps their "
                                                  "embeddings, the most recent refine.max_unlabeled."),
    state: Path = typer.Option(..., metavar="STATE", parser=given_path, help="Private state file; created, or added to if it exists."),
    csv_file: Optional[Path] = typer.Option(None, "--csv", metavar="FILE", parser=given_path,
                                            help="Regression bundles: samples as CSV rows `features..., target(s)` "
                                                 "(docs/regression.md); prints a JSON summary."),
    group: Optional[str] = typer.Option(None, metavar="NAME", help="With --csv: the group (source) the samples "
                                                                   "belong to, for `forget` (default: default)."),
    ink: str = typer.Option("auto", metavar="INK", help="high (bright strokes), low (dark strokes) or auto "
                                                        "(grey bundles; colour bundles have no ink)."),
    key_env: Optional[str] = typer.Option(None, metavar="VAR", help="Environment variable holding a 64-hex-digit "
                                                                    "key: the state is encrypted with it at rest "
                                                                    "(AES-256-GCM), and an existing one decrypted."),
) -> None:
    """Learn (more of) the classes in SUPPORT, and/or refine them with UNLABELED images, on the device;
    save the private state."""
    from edgemeta.contract.atomic_files import file_in_the_way
    from edgemeta.data.files import list_class_folders
    from edgemeta.runtime.classifier import FewShotClassifier

    key = _state_key(key_env)
    blocker = file_in_the_way(state)
    if blocker is not None:                     # found now, not after every support image is embedded
        raise InputError(f"--state {state}: {blocker} is a file, not a folder; expected a folder to keep the state in")
    if _regression_csv(bundle, csv_file):
        if csv_file is None:
            raise InputError(f"{bundle} is a regression bundle; give its samples with --csv FILE (features..., target)")
        from edgemeta.regression_cli import adapt_csv

        adapt_csv(bundle, csv_file, state, key, group, typer.echo)
        return
    from edgemeta.runtime.semisupervised import unlabeled_files

    if support is None and unlabeled is None:
        raise InputError("give --support FOLDER (a sub-folder of images per class), --unlabeled FOLDER (images "
                         "without labels), or both")
    classes = list_class_folders(support) if support is not None else []
    files = [f for _, found in classes for f in found]
    labels = [name for name, found in classes for _ in found]
    extra = unlabeled_files(unlabeled) if unlabeled is not None else None
    clf = FewShotClassifier.load_or_new(bundle, state, key)
    clf.ink = _support_ink(clf, files or extra, ink)
    if files:
        clf.partial_fit(files, labels, unlabeled=extra)   # decoded by the runtime, chunk by chunk
    else:
        clf.add_unlabeled(extra)
    clf.save(state, key)
    counts = clf.class_counts()
    typer.echo(f"{state}: {len(counts)} class{'' if len(counts) == 1 else 'es'} " + ", ".join(f"{k} ({v})" for k, v in counts.items()))


@command()
def predict(
    bundle: Path = typer.Argument(..., metavar="BUNDLE", parser=given_path, help=BUNDLE_HELP),
    images: Optional[list[Path]] = typer.Argument(None, metavar="IMAGES", parser=given_path, help="Image files, or folders: every image file "
                                                                    "in a folder (sorted, sub-folders not read)."),
    state: Path = typer.Option(..., metavar="STATE", parser=given_path, help="Private state file written by `edgemeta adapt`."),
    csv_file: Optional[Path] = typer.Option(None, "--csv", metavar="FILE", parser=given_path,
                                            help="Regression bundles: CSV rows of features; prints one JSON object "
                                                 "per row: row, prediction, std (where the rule gives one)."),
    unknown: bool = typer.Option(True, help="Answer 'unknown' below the bundle's calibrated threshold."),
    key_env: Optional[str] = typer.Option(None, metavar="VAR", help="Environment variable holding the "
                                                                    "64-hex-digit key the state was encrypted with "
                                                                    "(to decrypt and read it)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per image (fields above)."),
) -> None:
    """Label and confidence for each image, from the saved state.

    Text output: one line per image, `path<TAB>label<TAB>confidence`.

    JSON output (--json), one object per line: "image" the file; "label" the predicted class, or
    "unknown" when the image's best class score is below the bundle's calibrated threshold;
    "confidence" the softmax probability of the best class (0..1, over the known classes only);
    "max_logit" the best class score itself, the number the unknown threshold is compared with.
    """
    from edgemeta.runtime.classifier import FewShotClassifier, softmax

    key = _state_key(key_env)
    if _regression_csv(bundle, csv_file):
        if csv_file is None:
            raise InputError(f"{bundle} is a regression bundle; give the inputs with --csv FILE (features...)")
        from edgemeta.regression_cli import predict_csv

        predict_csv(bundle, csv_file, state, key, typer.echo)
        return
    if not images:
        raise InputError("give the IMAGES to classify (files or folders)")
    clf = FewShotClassifier.load(bundle, state, key)
    counts = clf.class_counts()
    if len(counts) < 2:
        raise InputError(f"{state} holds {len(counts)} class{'es' if len(counts) != 1 else ''} "
                         f"({', '.join(map(str, counts)) or 'none'}); predict needs two or more: add another class "
                         f"with `edgemeta adapt {bundle} --support FOLDER --state {state}`")
    files = _image_files(images)
    logits = clf.decision_function(files)       # decoded by the runtime, chunk by chunk: [N, C] held
    labels = clf.classes_[logits.argmax(1)].astype(object)
    threshold = clf.threshold_for(min(counts.values())) if unknown else None   # as predict(reject_unknown=True)
    if threshold is not None:
        labels[logits.max(1) < threshold] = clf.unknown_label
    proba = softmax(logits)
    for path, label, p, lg in zip(files, labels, proba, logits):
        label = label.item() if hasattr(label, "item") else label
        if as_json:
            typer.echo(json.dumps({"image": str(path), "label": label, "confidence": round(float(p.max()), 4),
                                   "max_logit": round(float(lg.max()), 4)}))
        else:
            typer.echo(f"{_one_field(path)}\t{_one_field(label)}\t{p.max():.3f}")


@command()
def forget(
    bundle: Path = typer.Argument(..., metavar="BUNDLE", parser=given_path, help=BUNDLE_HELP),
    label: str = typer.Argument(..., metavar="LABEL", help="The class to remove, with every stored embedding of it."),
    state: Path = typer.Option(..., metavar="STATE", parser=given_path, help="Private state file."),
    key_env: Optional[str] = typer.Option(None, metavar="VAR", help="Environment variable holding the "
                                                                    "64-hex-digit key the state was encrypted with "
                                                                    "(to decrypt it and write it back encrypted)."),
) -> None:
    """Remove a class from the saved state (the user's right to be forgotten)."""
    from edgemeta.runtime.classifier import FewShotClassifier

    key = _state_key(key_env)
    if _regression_csv(bundle, None):
        from edgemeta.regression_cli import forget_group

        forget_group(bundle, state, label, key, typer.echo)
        return
    clf = FewShotClassifier.load(bundle, state, key)
    target = next((k for k in clf.class_counts() if str(k) == label), label)
    clf.forget(target)
    clf.save(state, key)
    typer.echo(f"forgot {label!r}; {state} now holds " + (", ".join(map(str, clf.class_counts())) or "no classes"))


# ----------------------------------------------------------------------------------------------- demo
@command()
def demo(
    bundle: Optional[Path] = typer.Option(None, metavar="BUNDLE", help="Bundle (default: the shipped "
                                                                       "models/omniglot-conv4-proto-refine, the proto "
                                                                       "bundle with its refine graph)."),
    shots: int = typer.Option(5, metavar="K", help="Samples per digit the device learns from."),
    draws: int = typer.Option(100, metavar="N", help="Random support draws averaged (95% CI over them)."),
    figure: Path = typer.Option(Path("edgemeta-demo.png"), metavar="FILE", help="PNG to write."),
    no_figure: bool = typer.Option(False, "--no-figure", help="Skip the figure (no matplotlib needed)."),
    omniglot: Optional[Path] = typer.Option(None, metavar="FOLDER", help="Omniglot folder (held-out characters for "
                                                                         "'unknown'; skipped if absent)."),
    as_json: bool = typer.Option(False, "--json", help="Also print the figures as one JSON object."),
    save_samples: Optional[Path] = typer.Option(
        None, metavar="FOLDER", help="Instead: write digits 0-3 as PNG files to try `adapt` and `predict` on "
                                     "(5 per digit in FOLDER/support/<digit>/, 3 per digit in FOLDER/queries/, "
                                     "10 per digit shuffled in FOLDER/unlabeled/ for adapt --unlabeled)."),
) -> None:
    """Learn scikit-learn's handwritten digits from 5 samples each on the shipped bundle."""
    from edgemeta.demo import DEFAULT_BUNDLE, run_demo, save_digit_samples

    if save_samples is not None:
        support, queries = save_digit_samples(save_samples)
        typer.echo(f"wrote {support} (one folder per digit) and {queries}")
        return
    res = run_demo(bundle or DEFAULT_BUNDLE, shots, draws, None if no_figure else figure, omniglot)
    if as_json:
        typer.echo(json.dumps(res))

