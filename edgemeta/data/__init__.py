"""Datasets and episodes (numpy only, shared by workstation training and device-side evaluation)."""

from edgemeta.data.classes import ClassImages, add_rotations
from edgemeta.data.episodes import Episode, EpisodeIndices, EpisodeSampler
from edgemeta.data.files import load_class_npz, load_dataset, load_image_folder, split_classes
from edgemeta.data.omniglot import load_omniglot

__all__ = ["ClassImages", "Episode", "EpisodeIndices", "EpisodeSampler", "add_rotations",
           "load_class_npz", "load_dataset", "load_image_folder", "load_omniglot", "split_classes"]
