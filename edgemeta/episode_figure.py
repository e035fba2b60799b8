"""One episode drawn for a person: the support images (one row per class) and every query marked
with the runtime's predicted label, green when right and red when wrong (matplotlib, optional).

The episode is episode ``episode`` of the same seeded sampler ``edgemeta eval`` uses, adapted and
predicted through :class:`~edgemeta.runtime.classifier.FewShotClassifier` exactly as there.
Images are shown as the bundle sees them (after preprocessing): photos in colour, glyphs dark on white.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgemeta.data.classes import ClassImages
from edgemeta.data.episodes import EpisodeSampler
from edgemeta.errors import InputError
from edgemeta.evaluation import runtime_images
from edgemeta.runtime.classifier import FewShotClassifier
from edgemeta.runtime.loaded_bundle import Bundle

DPI = 100
TILE = 96                  # pixels per image
GAP = 8                    # pixels between images
QUERY_LABEL = 30           # pixels above each query for its label
ROW_LABEL = 150            # pixels left of each support row for its class
MARGIN = 24
TITLE = 64
MAX_COLUMNS = 10
RIGHT, WRONG = "#1a9850", "#d73027"
FRAME_PX = 5               # frame width around each query, pixels
INSTALL = "pip install 'edgemeta[demo]'"


@dataclass(frozen=True)
class EpisodeFigure:
    """What was drawn. ``true`` / ``predicted``: the class names of the queries ``[Q]``; ``correct``:
    bool ``[Q]``; ``frames``: int ``[Q, 4]`` each query's frame in the PNG as pixel ``(left, top,
    right, bottom)`` (rows counted from the top); ``size``: the PNG's ``(width, height)`` in pixels."""

    path: str
    classes: list[str]
    true: np.ndarray
    predicted: np.ndarray
    correct: np.ndarray
    frames: np.ndarray
    size: tuple[int, int]


def require_matplotlib() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend; an InputError naming the extra if absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError(f"drawing an episode (--figure) needs matplotlib, which is not installed here: "
                         f"{INSTALL}") from None
    return plt


def _short(name: str, width: int = 16) -> str:
    """``name`` cut in the middle to at most ``width`` characters."""
    name = str(name)
    return name if len(name) <= width else name[: width // 2 - 1] + "…" + name[-(width - width // 2):]


def _picture(x: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """One preprocessed image ``[C, H, W]`` in [0, 1] -> what ``imshow`` takes (glyphs: ink dark)."""
    if x.shape[0] == 3:
        return np.clip(x.transpose(1, 2, 0), 0, 1), {}
    return x[0], {"cmap": "gray_r", "vmin": 0.0, "vmax": 1.0}


def draw_episode(bundle: Bundle, data: ClassImages, ways: int, shots: int, queries: int,
                 path: str | os.PathLike, seed: int = 0, episode: int = 0, source: str = "") -> EpisodeFigure:
    """Adapt to episode ``episode`` of ``EpisodeSampler(data, ways, shots, queries, seed)``, predict its
    queries and write the picture to ``path`` (PNG). Returns what was drawn (:class:`EpisodeFigure`)."""
    plt = require_matplotlib()
    from matplotlib.patches import Rectangle

    ep = EpisodeSampler(data, ways, shots, queries, seed).episode(episode)
    names = np.asarray(data.names)[ep.classes]
    clf = FewShotClassifier(bundle)
    clf.fit(runtime_images(ep.support_x), names[ep.support_y])
    true = names[ep.query_y]
    predicted = np.asarray(clf.predict(runtime_images(ep.query_x)))
    correct = predicted == true
    key = {n: chr(ord("A") + i) if ways <= 26 else str(i + 1) for i, n in enumerate(names)}

    q = len(true)
    cols = min(MAX_COLUMNS, q)
    rows = -(-q // cols)
    support_w = ROW_LABEL + shots * (TILE + GAP)
    query_x0 = MARGIN + support_w + 3 * GAP
    width = query_x0 + cols * (TILE + GAP) + MARGIN
    support_h = 30 + ways * (TILE + GAP)
    query_h = 30 + rows * (TILE + GAP + QUERY_LABEL)
    height = TITLE + max(support_h, query_h) + MARGIN
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)

    def axes_at(left: int, top: int, w: int, h: int) -> Any:      # pixel box, rows from the top
        return fig.add_axes((left / width, 1 - (top + h) / height, w / width, h / height))

    right = int(correct.sum())
    fig.text(MARGIN / width, 1 - 18 / height,
             f"{ways}-way {shots}-shot episode {episode} (seed {seed}){' of ' + source if source else ''}: "
             f"{right} of {q} queries right ({right / q * 100:.1f} %)", fontsize=13, weight="bold", va="top")
    fig.text(MARGIN / width, 1 - 42 / height, f"bundle {bundle.source} ({bundle.method}, {bundle.precision}); "
             f"above each query its predicted class (letters as the support rows): green = right, red = wrong",
             fontsize=9, va="top")
    top0 = TITLE
    fig.text(MARGIN / width, 1 - (top0 + 4) / height, f"support: {shots} per class", fontsize=11, va="top")
    for c in range(ways):
        top = top0 + 30 + c * (TILE + GAP)
        fig.text(MARGIN / width, 1 - (top + TILE / 2) / height, key[names[c]], fontsize=16, va="center",
                 weight="bold")
        fig.text((MARGIN + 28) / width, 1 - (top + TILE / 2) / height, _short(names[c]), fontsize=9, va="center")
        for s in range(shots):
            ax = axes_at(MARGIN + ROW_LABEL + s * (TILE + GAP), top, TILE, TILE)
            img, kw = _picture(ep.support_x[c * shots + s])
            ax.imshow(img, interpolation="nearest", **kw)
            ax.set_axis_off()
    fig.text(query_x0 / width, 1 - (top0 + 4) / height, f"queries: {queries} per class, predicted label",
             fontsize=11, va="top")
    frames = np.zeros((q, 4), np.int64)
    for i in range(q):
        r, c = divmod(i, cols)
        left = query_x0 + c * (TILE + GAP)
        top = top0 + 30 + r * (TILE + GAP + QUERY_LABEL) + QUERY_LABEL
        ax = axes_at(left, top, TILE, TILE)
        img, kw = _picture(ep.query_x[i])
        ax.imshow(img, interpolation="nearest", **kw)
        ax.set_xticks([])
        ax.set_yticks([])
        colour = RIGHT if correct[i] else WRONG
        for spine in ax.spines.values():
            spine.set_visible(False)
        # the frame: a rectangle whose stroke lies on the image's outer edge, FRAME_PX wide
        ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, edgecolor=colour,
                               linewidth=FRAME_PX * 72 / DPI, clip_on=False))
        mark = f"✓ {key[predicted[i]]}" if correct[i] else f"✗ {key[predicted[i]]} (true {key[true[i]]})"
        ax.set_title(mark, fontsize=10, color=colour, pad=3, weight="bold")
        frames[i] = (left, top, left + TILE, top + TILE)
    fig.savefig(path, dpi=DPI, format="png")
    plt.close(fig)
    return EpisodeFigure(str(path), [str(n) for n in names], true, predicted, correct, frames, (width, height))
