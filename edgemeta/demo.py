"""``edgemeta demo``: a device user's private few-shot task on the shipped Omniglot bundle.

The user's "private samples" are scikit-learn's bundled handwritten digits (real scans, 8x8, ink
bright; a task the model never saw). The demo learns the ten digits from ``shots`` samples each,
reports accuracy on all other digits over repeated random draws, adapt/predict latencies, the
size of the saved private state, unknown rejection of held-out Omniglot characters, and, with a
bundle that has a refine graph (the default), what unlabelled samples add: 1 labelled + N unlabelled
images per digit, labelled-only vs refined, in the same draws. Writes a PNG figure. Numpy + onnxruntime on the device path; scikit-learn and matplotlib only to load the
digits and draw.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgemeta.metrics import mean_ci95
from edgemeta.runtime.classifier import FewShotClassifier
from edgemeta.runtime.loaded_bundle import Bundle

DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "models" / "omniglot-conv4-proto-refine"
UNLABELED_PER_DIGIT = (0, 5, 10, 20, 50)      # the semi-supervised curve: 1 labelled + N unlabelled per digit


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as float images ``[1797, 8, 8]`` in [0, 1] (ink bright) and labels ``[1797]``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ModuleNotFoundError("the demo needs scikit-learn for its bundled digits: pip install 'edgemeta[demo]'",
                                  name="sklearn") from exc
    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def draw_split(y: np.ndarray, shots: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``shots`` random support indices per class and every other index as queries."""
    support = np.concatenate([rng.choice(np.flatnonzero(y == c), shots, replace=False) for c in np.unique(y)])
    query = np.setdiff1d(np.arange(len(y)), support)
    return support, query


def save_digit_samples(folder: str | os.PathLike, digits: tuple[int, ...] = (0, 1, 2, 3), shots: int = 5,
                       queries: int = 3, seed: int = 0, unlabeled: int = 10) -> tuple[Path, Path]:
    """Write scikit-learn digits as PNG files to try ``edgemeta adapt`` / ``predict`` on: ``shots`` per
    digit in ``folder/support/<digit>/``, ``queries`` others per digit in ``folder/queries/`` and
    ``unlabeled`` others per digit, shuffled and unnamed, in ``folder/unlabeled/`` (for ``adapt
    --unlabeled``) (8x8 grey scans, ink bright). Returns ``(support folder, queries folder)``."""
    from PIL import Image

    x, y = load_digits_images()
    rng = np.random.default_rng(seed)
    support, query, unl = Path(folder) / "support", Path(folder) / "queries", Path(folder) / "unlabeled"
    pool: list[int] = []
    for d in digits:
        rows = rng.permutation(np.flatnonzero(y == d))[:shots + queries + unlabeled]
        (support / str(d)).mkdir(parents=True, exist_ok=True)
        query.mkdir(parents=True, exist_ok=True)
        for i, r in enumerate(rows[:shots + queries]):
            path = support / str(d) / f"{i:02d}.png" if i < shots else query / f"digit{d}_{i - shots:02d}.png"
            Image.fromarray((x[r] * 255).round().astype(np.uint8)).save(path)
        pool += rows[shots + queries:].tolist()
    if unlabeled:
        unl.mkdir(parents=True, exist_ok=True)
        for i, r in enumerate(rng.permutation(pool)):
            Image.fromarray((x[r] * 255).round().astype(np.uint8)).save(unl / f"u{i:03d}.png")
    return support, query


def _median_ms(fn: Any, repeats: int) -> float:
    fn()                                                  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def run_demo(bundle_path: str | os.PathLike = DEFAULT_BUNDLE, shots: int = 5, draws: int = 100,
             figure: str | os.PathLike | None = "edgemeta-demo.png", omniglot: str | os.PathLike | None = None,
             seed: int = 0, log: Any = print) -> dict[str, Any]:
    """Run the demo; returns the figures it prints (JSON-serialisable)."""
    bundle = Bundle.load(bundle_path, threads=1)
    x, y = load_digits_images()
    rng = np.random.default_rng(seed)
    clf = FewShotClassifier(bundle)
    emb = clf.embed(x)                                    # each image embedded once; episodes re-adapt
    res: dict[str, Any] = {"bundle": str(bundle_path), "method": bundle.method, "task": "sklearn digits, 10 classes",
                           "shots": shots, "draws": draws}

    def accuracy(k: int, n: int) -> tuple[float, float, np.ndarray]:
        accs, conf = [], np.zeros((10, 10), np.int64)
        for _ in range(n):
            s, q = draw_split(y, k, rng)
            clf.fit_embeddings(emb[s], y[s])
            pred = clf.classes_[bundle.classify(emb[q], clf.params_).argmax(1)]
            accs.append((pred == y[q]).mean() * 100)
            np.add.at(conf, (y[q], pred), 1)
        m, ci = mean_ci95(accs)
        return m, ci, conf

    acc, ci, conf = accuracy(shots, draws)
    res["accuracy"], res["ci95"] = round(acc, 2), round(ci, 2)
    log(f"{bundle.method} bundle learned 10 digits from {shots} samples each: {acc:.2f} ± {ci:.2f} % on the other "
        f"{len(y) - 10 * shots} digits ({draws} random draws, 95% CI)")
    curve = {}
    for k in range(1, 11):
        m, c, _ = accuracy(k, max(20, draws // 4))
        curve[k] = (round(m, 2), round(c, 2))
    res["accuracy_by_shots"] = {str(k): {"accuracy": v[0], "ci95": v[1]} for k, v in curve.items()}
    log("accuracy by shots: " + ", ".join(f"{k}: {v[0]:.1f}" for k, v in curve.items()))

    # latencies on one thread, raw images in (preprocess + backbone + adapt / classify)
    s, q = draw_split(y, shots, rng)
    res["adapt_ms_10way_embedding_included"] = round(_median_ms(lambda: clf.fit(x[s], y[s]), 30), 2)
    one = x[q[:1]]
    res["predict_ms_per_image"] = round(_median_ms(lambda: clf.predict(one), 200), 3)
    log(f"adapt 10-way {shots}-shot (embedding included): {res['adapt_ms_10way_embedding_included']:.2f} ms; "
        f"predict one image: {res['predict_ms_per_image']:.3f} ms (median, 1 thread)")

    # the private state: embeddings + head + labels, never raw samples
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.bin"
        clf.save(path)
        size = path.stat().st_size
    res["state_bytes"], res["state_bytes_per_class"] = size, round(size / 10, 1)
    log(f"saved private state: {size} bytes ({size / 10:.0f} per class, {shots} embeddings each)")

    # unknown rejection: held-out Omniglot characters are none of the ten digits
    thr = clf.threshold_for(shots)
    res["unknown_threshold"] = thr
    digit_logits = bundle.classify(emb[q], clf.params_).max(1)
    res["digits_accepted"] = round(float((digit_logits >= thr).mean()), 4) if thr is not None else None
    try:
        from edgemeta.data.omniglot import load_omniglot

        om = load_omniglot("vinyals", "test", omniglot, rotations=False)
        pick = np.random.default_rng(seed + 1).choice(om.n_images, 1000, replace=False)
        om_scores = bundle.classify(bundle.embed(om.batch(pick)), clf.params_).max(1)
        res["omniglot_rejected"] = round(float((om_scores < thr).mean()), 4) if thr is not None else None
        from edgemeta.openset import auroc

        res["unknown_auroc"] = round(auroc(digit_logits, om_scores), 4)
        log(f"unknown rejection at the bundle's calibrated threshold ({thr:.2f}): {res['omniglot_rejected'] * 100:.1f} % "
            f"of 1,000 held-out Omniglot characters rejected, {res['digits_accepted'] * 100:.1f} % of digits accepted; "
            f"AUROC {res['unknown_auroc']:.3f}")
    except FileNotFoundError as exc:
        log(f"unknown rejection skipped: {exc}")
    semi = None
    if bundle.refiner is not None:
        semi = semi_supervised_curve(clf, emb, y, rng, max(20, draws // 2))
        res["semi_supervised"] = semi
        first, last = semi["by_unlabeled"][str(UNLABELED_PER_DIGIT[1])], semi["by_unlabeled"][str(UNLABELED_PER_DIGIT[-1])]
        log(f"1 labelled digit each plus unlabelled ones (refine graph): {first['labelled']:.1f} -> "
            f"{first['refined']:.1f} % with {UNLABELED_PER_DIGIT[1]} unlabelled per digit, {last['labelled']:.1f} -> "
            f"{last['refined']:.1f} % with {UNLABELED_PER_DIGIT[-1]} ({semi['draws']} draws)")
    else:
        log(f"unlabelled samples skipped: {bundle_path} has no refine graph (edgemeta add-refine)")
    if figure:
        _figure(figure, x, y, shots, conf, curve, rng, semi)
        res["figure"] = str(figure)
        log(f"figure: {figure}")
    return res


def semi_supervised_curve(clf: FewShotClassifier, emb: np.ndarray, y: np.ndarray, rng: np.random.Generator,
                          draws: int, unlabeled: tuple[int, ...] = UNLABELED_PER_DIGIT) -> dict[str, Any]:
    """1 labelled + N unlabelled digits per class (N in ``unlabeled``), queries all the others; labelled-only
    and refined accuracy (%, mean ± 95% CI) in the same ``draws`` draws. ``emb``: every digit's embedding."""
    out: dict[str, Any] = {"labelled_per_digit": 1, "draws": draws, "by_unlabeled": {}}
    classes = np.unique(y)
    for n in unlabeled:
        plain, refined = [], []
        for _ in range(draws):
            rows = np.stack([rng.choice(np.flatnonzero(y == c), 1 + n, replace=False) for c in classes])
            lab, unl = rows[:, 0], rows[:, 1:].reshape(-1)
            q = np.setdiff1d(np.arange(len(y)), rows.reshape(-1))
            for acc, pool in ((plain, None), (refined, emb[unl] if n else None)):
                clf.fit_embeddings(emb[lab], y[lab], unlabeled=pool)
                acc.append((clf.classes_[clf.bundle.classify(emb[q], clf.params_).argmax(1)] == y[q]).mean() * 100)
        (pa, pc), (ra, rc) = mean_ci95(plain), mean_ci95(refined)
        out["by_unlabeled"][str(n)] = {"labelled": round(pa, 2), "labelled_ci95": round(pc, 2),
                                       "refined": round(ra, 2), "refined_ci95": round(rc, 2)}
    return out


def _figure(path: str | os.PathLike, x: np.ndarray, y: np.ndarray, shots: int, conf: np.ndarray,
            curve: dict[int, tuple[float, float]], rng: np.random.Generator,
            semi: dict[str, Any] | None = None) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ModuleNotFoundError("the figure needs matplotlib: pip install 'edgemeta[demo]' (or pass --no-figure)",
                                  name="matplotlib") from exc
    panels = 3 if semi is None else 4
    fig = plt.figure(figsize=(5 * panels, 5))
    s, _ = draw_split(y, shots, rng)
    grid = np.zeros((10 * 9, shots * 9))
    for i, idx in enumerate(s):
        r, c = divmod(i, shots)
        grid[r * 9:r * 9 + 8, c * 9:c * 9 + 8] = x[idx]
    ax = fig.add_subplot(1, panels, 1)
    ax.imshow(grid, cmap="gray_r")
    ax.set_title(f"support: {shots} samples per digit")
    ax.axis("off")
    ax = fig.add_subplot(1, panels, 2)
    rates = conf / conf.sum(1, keepdims=True)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(10):
        for j in range(10):
            if rates[i, j] >= 0.01:
                ax.text(j, i, f"{rates[i, j] * 100:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion (%), {shots}-shot")
    ax = fig.add_subplot(1, panels, 3)
    ks = sorted(curve)
    ax.errorbar(ks, [curve[k][0] for k in ks], yerr=[curve[k][1] for k in ks], marker="o", capsize=3)
    ax.set_xlabel("shots per digit")
    ax.set_ylabel("accuracy (%)")
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    ax.set_title("accuracy vs shots (95% CI)")
    if semi is not None:
        ax = fig.add_subplot(1, panels, 4)
        ns = sorted(int(n) for n in semi["by_unlabeled"])
        rows = [semi["by_unlabeled"][str(n)] for n in ns]
        ax.errorbar(ns, [r["labelled"] for r in rows], yerr=[r["labelled_ci95"] for r in rows], marker="o",
                    capsize=3, label="labelled only (1 per digit)")
        ax.errorbar(ns, [r["refined"] for r in rows], yerr=[r["refined_ci95"] for r in rows], marker="s",
                    capsize=3, label="refined with the unlabelled")
        ax.set_xlabel("unlabelled samples per digit")
        ax.set_ylabel("accuracy (%)")
        ax.set_xticks(ns)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        ax.set_title("1 labelled + N unlabelled per digit")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
