"""Adapted curves of a sinusoid bundle against the true ones, with the predictive band, at K = 5 and 10.

Runs the bundle through the device runtime (FewShotRegressor) on three test tasks (seed stream
TEST_SEED + 1, never used in meta-training) and draws, per support size, the true curve, the support
points, the adapted prediction and, where the rule gives one, the band mean ± 2 std, over x in [-7, 7]
(the tasks' inputs lie in [-5, 5]; outside it the band shows the rule's extrapolation uncertainty)::

    python tools/sinusoid_figure.py models/sinusoid-alpaca models/sinusoid-alpaca/adapted-curves.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def draw(bundle: Path, out: Path, shots: tuple[int, ...] = (5, 10), tasks: int = 3) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgemeta.data.sinusoid import TEST_SEED, sample_tasks, sinusoid
    from edgemeta.runtime.regressor import FewShotRegressor

    reg = FewShotRegressor(bundle)
    grid = np.linspace(-7, 7, 560, dtype=np.float32)[:, None]     # past [-5, 5]: the band widens there
    inside = np.abs(grid[:, 0]) <= 5
    fig, axes = plt.subplots(len(shots), tasks, figsize=(4 * tasks, 3 * len(shots)), sharex=True, squeeze=False)
    for r, k in enumerate(shots):
        b = sample_tasks(np.random.default_rng([TEST_SEED + 1, k]), tasks, k, 0)
        for c in range(tasks):
            ax = axes[r][c]
            reg.fit(b.x_support[c], b.y_support[c])
            truth = sinusoid(grid[:, 0], b.amplitude[c], b.phase[c])
            if reg.bundle.gives_variance:
                mean, std = reg.predict(grid, return_std=True)
                ax.fill_between(grid[:, 0], mean - 2 * std, mean + 2 * std, color="tab:blue", alpha=0.25,
                                label="± 2 std")
            else:
                mean = reg.predict(grid)
            mse = float(np.mean((mean[inside] - truth[inside]) ** 2))
            ax.axvspan(-7, -5, color="0.92")
            ax.axvspan(5, 7, color="0.92")
            ax.plot(grid[:, 0], truth, color="black", lw=1.5, label="true")
            ax.plot(grid[:, 0], mean, color="tab:blue", lw=1.5, ls="--", label="adapted")
            ax.scatter(b.x_support[c][:, 0], b.y_support[c], color="tab:red", zorder=3, s=18, label=f"{k} points")
            ax.set_title(f"K={k}, A={b.amplitude[c]:.2f}, phase={b.phase[c]:.2f}; MSE {mse:.4f}", fontsize=8)
            if c == 0:
                ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{bundle.name} ({reg.bundle.method}) adapted on the device runtime; MSE over x in [-5, 5] per panel (grey: outside the tasks' input range)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tools/sinusoid_figure.py BUNDLE OUT.png")
    draw(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"wrote {sys.argv[2]}")
