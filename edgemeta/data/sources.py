"""Name -> class set: the one place that turns a dataset name (``omniglot`` or a path) into data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgemeta.contract.preprocess import default_spec
from edgemeta.data.classes import ClassImages
from edgemeta.data.files import load_dataset, split_classes
from edgemeta.data.files import load_image_folder
from edgemeta.data.omniglot import default_root, load_omniglot
from edgemeta.data.photos import has_split_folders, is_colour_folder, load_photo_folder, split_folder_sets
from edgemeta.errors import InputError


def training_sets(dataset: str, split: str, image_size: tuple[int, int], omniglot_root: str | Path | None,
                  val_fraction: float = 0.15, seed: int = 0) -> tuple[ClassImages, ClassImages, dict[str, Any]]:
    """Meta-training and validation classes plus the provenance a bundle records about them.

    A folder with ``train/`` and ``val/`` class folders is used as split (no random split); colour
    photos there are stored as uint8 ``[M, 3, H, W]``. Other datasets are split by class at random.
    """
    if dataset == "omniglot":
        root = Path(omniglot_root) if omniglot_root else default_root()
        train = load_omniglot(split, "train", root, image_size)
        val = load_omniglot(split, "val", root, image_size)
        prov = {"dataset": "omniglot", "split": split, "train_classes": train.n_classes,
                "val_classes": val.n_classes, "rotations": "train only"}
        return train, val, prov
    if has_split_folders(dataset):
        if is_colour_folder(Path(dataset) / "train"):
            return split_folder_sets(dataset, image_size)
        return split_folder_sets(dataset, image_size, lambda d, size: load_image_folder(d, default_spec(size)))
    data = load_dataset(dataset, default_spec(image_size))
    train, val = split_classes(data, val_fraction, seed)
    prov = {"dataset": str(dataset), "split": f"by class, val_fraction={val_fraction}, seed={seed}",
            "train_classes": train.n_classes, "val_classes": val.n_classes}
    return train, val, prov


def evaluation_set(provenance: dict[str, Any], spec: dict[str, Any], data: str | Path | None,
                   omniglot_root: str | Path | None, split: str | None = None, part: str = "test",
                   rotations: bool | None = None) -> tuple[ClassImages, str]:
    """The classes to evaluate on: ``data`` if given, else the test part of the bundle's own Omniglot split.

    ``rotations`` adds each evaluated character rotated by 90/180/270 degrees as three more classes.
    By default it follows the literature: on for ``vinyals`` (Vinyals et al. 2016, ProtoNets, MAML:
    423 test characters x 4 = 1,692 classes), off for ``lake`` (Lake et al. 2015 has no rotations).
    """
    size = (int(spec["size"][0]), int(spec["size"][1]))
    if data is not None:
        if rotations is not None:
            raise InputError("--rotations/--no-rotations applies to Omniglot's test classes; the classes of --data "
                             "are evaluated as given (add rotated copies to the dataset to test them)")
        seen = set(provenance.get("train_class_names", [])) | set(provenance.get("val_class_names", []))
        test = load_photo_folder(data, size) if int(spec.get("channels", 1)) == 3 else load_dataset(data, spec)
        overlap = sorted(seen & set(test.names))
        if overlap:
            raise InputError(f"{data}: {len(overlap)} of its classes ({', '.join(overlap[:3])}, ...) were used in this "
                             f"bundle's meta-training or validation; expected held-out test classes "
                             f"(e.g. the test/ folder beside train/ and val/)")
        return test, f"{data}"
    if provenance.get("dataset") != "omniglot":
        raise InputError(f"this bundle was meta-trained on {provenance.get('dataset')!r}; pass --data with its "
                         f"held-out test classes (a .npz or an image folder)")
    trained_on = provenance.get("split", "vinyals")
    split = split or trained_on
    root = Path(omniglot_root) if omniglot_root else default_root()
    rotate = (split == "vinyals") if rotations is None else rotations
    evaluated = load_omniglot(split, part, root, size, rotations=rotate)
    seen = load_omniglot(trained_on, "train", root, size, rotations=False)
    overlap = set(evaluated.image_ids // 100) & set(seen.image_ids // 100)     # char_id of each drawing
    if overlap:
        raise InputError(f"the {split!r} {part} classes include {len(overlap)} characters this bundle was "
                         f"meta-trained on (split {trained_on!r}); evaluate on --split {trained_on} instead")
    return evaluated, f"omniglot/{split}/{part}" + ("+rotations" if rotate else "")


def split_origin(dataset: str, train: ClassImages, val: ClassImages, val_fraction: float) -> str:
    """Where the meta-training and validation classes came from, in words (for error messages)."""
    if dataset == "omniglot":
        return f"Omniglot has {train.n_classes} meta-training and {val.n_classes} validation classes"
    if has_split_folders(dataset):
        return f"{dataset} has {train.n_classes} classes in train/ and {val.n_classes} in val/"
    total = train.n_classes + val.n_classes
    return (f"{dataset} has {total} classes: --val-fraction {val_fraction:g} sent {val.n_classes} to validation "
            f"(at least 2), leaving {train.n_classes} for meta-training")


def check_episode_classes(train: ClassImages, val: ClassImages, origin: str, ways: int, shots: int, queries: int,
                          val_ways: int, val_shots: int, val_queries: int, unlabelled_train: bool = False) -> None:
    """Refuse, before any training, a split whose meta-training or validation part has too few classes
    with enough images for its episodes; the message says how the classes were split and what is needed.
    ``unlabelled_train``: meta-training tasks take single images as classes (``--unsupervised``), so that
    part needs ``ways`` images, whatever its classes."""
    parts = (("meta-training", train, ways, shots, queries, "lower --ways, or add classes"),
             ("validation", val, val_ways, val_shots, val_queries, "lower --val-ways or raise --val-fraction"))
    for part, data, w, s, q, fix in parts:
        if unlabelled_train and part == "meta-training":
            if data.n_images < w:
                raise InputError(f"{origin}; {w}-way unsupervised meta-training tasks need {w} unlabelled images, "
                                 f"and the meta-training part has {data.n_images}: lower --ways, or add images")
            continue
        usable = int(np.count_nonzero(data.counts >= s + q))
        if usable < w:
            also = "" if usable == data.n_classes else f" ({data.n_classes - usable} of its classes have fewer images)"
            raise InputError(f"{origin}; {w}-way {s}-shot {q}-query {part} episodes need {w} classes with at "
                             f"least {s + q} images each, and the {part} part has {usable}{also}: {fix}")
