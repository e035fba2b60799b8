"""How stroke width and canvas size change what a grey glyph bundle sees in a user's drawings.

A bundle whose ``preprocess.resize`` is ``nearest`` (the Omniglot bundles) samples one source pixel
every ``side / 28`` pixels: a stroke narrower than that can fall between the samples and vanish. This
draws dark-ink-on-white shapes (circle, cross, triangle, zigzag, square, a T) with Pillow at several
canvas sizes and pen widths, adapts each bundle 6-way 5-shot on them and prints accuracy and the
share of queries answered ``unknown`` (the bundle's calibrated threshold), averaged over draws:

    python tools/stroke_width.py models/omniglot-conv4-proto models/omniglot-conv4 --draws 5

Synthetic shapes, not a benchmark of the bundles: the point is the effect of the stroke width.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from edgemeta.runtime import FewShotClassifier

KINDS = ("circle", "cross", "triangle", "zigzag", "square", "tee")
# (canvas side, narrowest pen, widest pen, side the user shrinks the drawing to first or None)
SETTINGS = ((300, 6, 14, None), (300, 11, 16, None), (300, 20, 28, None), (105, 3, 5, None), (105, 7, 9, None),
            (300, 6, 14, 105))


def draw(kind: str, side: int, pen: int, rng: np.random.Generator, jitter: float = 0.027) -> np.ndarray:
    """One shape, black ink on white, uint8 ``[side, side]``; corners jittered by ``jitter * side``."""
    im = Image.new("L", (side, side), 255)
    d = ImageDraw.Draw(im)
    s = side / 300

    def p(x: float, y: float) -> tuple[float, float]:
        return float(x * s + rng.normal(0, jitter * side)), float(y * s + rng.normal(0, jitter * side))

    if kind == "circle":
        (x0, y0), (x1, y1) = p(80, 80), p(220, 220)
        d.ellipse([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=0, width=pen)
    elif kind == "cross":
        d.line([p(80, 80), p(220, 220)], fill=0, width=pen)
        d.line([p(220, 80), p(80, 220)], fill=0, width=pen)
    elif kind == "triangle":
        d.line([p(150, 70), p(230, 220), p(70, 220), p(150, 70)], fill=0, width=pen, joint="curve")
    elif kind == "zigzag":
        d.line([p(70, 100), p(120, 200), p(170, 100), p(220, 200)], fill=0, width=pen, joint="curve")
    elif kind == "square":
        corners = [p(80, 80), p(220, 80), p(220, 220), p(80, 220)]
        d.line(corners + [corners[0]], fill=0, width=pen, joint="curve")
    else:
        d.line([p(60, 150), p(240, 150)], fill=0, width=pen)
        d.line([p(150, 60), p(150, 110)], fill=0, width=pen)
    return np.asarray(im)


def one_draw(clf: FewShotClassifier, side: int, pen_lo: int, pen_hi: int, shrink: int | None,
             rng: np.random.Generator, shots: int = 5, queries: int = 20) -> tuple[float, float]:
    """Fit ``shots`` drawings per shape, classify ``queries`` new ones: (accuracy, share unknown)."""
    post: Callable[[np.ndarray], np.ndarray] = (
        (lambda a: np.asarray(Image.fromarray(a).resize((shrink, shrink), Image.LANCZOS))) if shrink else (lambda a: a))

    def make(kind: str) -> np.ndarray:
        return post(draw(kind, side, int(rng.integers(pen_lo, pen_hi + 1)), rng))

    support = [make(k) for k in KINDS for _ in range(shots)]
    query = [make(k) for k in KINDS for _ in range(queries)]
    truth = np.array([k for k in KINDS for _ in range(queries)])
    clf.fit(support, [k for k in KINDS for _ in range(shots)])
    accuracy = float((clf.predict(query) == truth).mean())
    unknown = float((clf.predict(query, reject_unknown=True) == "unknown").mean())
    return accuracy, unknown


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="+", help="grey glyph bundles (folders or .zip)")
    ap.add_argument("--draws", type=int, default=5, help="random draws per setting (each 6 shapes x 20 queries)")
    args = ap.parse_args(argv)
    for bundle in args.bundles:
        clf = FewShotClassifier(bundle)
        for side, lo, hi, shrink in SETTINGS:
            r = np.array([one_draw(clf, side, lo, hi, shrink, np.random.default_rng([d, side, lo])) for d in range(args.draws)])
            what = f"{side} px canvas, {lo}-{hi} px pen" + (f", shrunk to {shrink} px (LANCZOS)" if shrink else "")
            print(f"{bundle}\t{what}\taccuracy {100 * r[:, 0].mean():.1f} %\tunknown {100 * r[:, 1].mean():.1f} %"
                  f"\t(6-way 5-shot, {args.draws} draws x 120 queries)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
