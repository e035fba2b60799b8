"""Peer: the same conv4 backbone in torch eager, what a user has without edgemeta.

    .venv/bin/python tools/bench/torch_eager.py [--threads 1]

Main venv (torch 2.13.0 CPU; no package conflict, but its own process). The shipped bundle's training
weights are not committed, so the torch model is rebuilt from ``backbone.onnx``: the textbook conv4
(defined here in plain torch, so edgemeta's own module, whose block order is an implementation detail,
does not change this peer) with every conv weight / bias copied from the graph's initializers (BatchNorm
is folded into them there). The embeddings are checked against onnxruntime.

Two forms are timed, ``torch.inference_mode()``, ``eval()``, ``torch.set_num_threads(1)``, one core:
- ``folded``: conv (BN folded) -> ReLU -> maxpool, x4: exactly backbone.onnx's graph.
- ``with_bn``: conv -> BatchNorm (eval) -> ReLU -> maxpool, x4: the module as meta-training leaves it
  (BN statistics set so it computes the same function); what a user would usually run.

Figures: embedding ms per image at batch 1 and 25; adapt 5-way 5-shot = embed the 25 support images
+ prototypes (class means, as edgemeta's ``proto`` ``adapt``); median after warm-up.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BUNDLE, as_float, current_rss_mb, emit, load_episodes, peak_rss_mb, pin_one_core, timeit  # noqa: E402


def conv4(folded: bool):
    """The textbook conv4, written here in plain torch (not edgemeta's class, whose block order may change):
    4 x [conv3x3-64, (BatchNorm), ReLU, maxpool2], flatten. ``folded``: no BatchNorm, i.e. backbone.onnx's
    graph node for node (Conv -> Relu -> MaxPool)."""
    from torch import nn

    def block(cin: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, 64, 3, padding=1), nn.Identity() if folded else nn.BatchNorm2d(64),
                             nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(block(1), block(64), block(64), block(64), nn.Flatten())


def build(folded: bool):
    import onnx
    import torch
    from onnx import numpy_helper

    m = conv4(folded)
    w = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(BUNDLE / "backbone.onnx")).graph.initializer}
    with torch.no_grad():
        for i in range(4):
            blk = m[i]
            blk[0].weight.copy_(torch.from_numpy(w[f"blocks.{i}.0.weight"].copy()))
            blk[0].bias.copy_(torch.from_numpy(w[f"blocks.{i}.0.bias"].copy()))
            if not folded:   # identity statistics: same function, same work as a trained BN in eval mode
                bn = blk[1]
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                bn.weight.fill_(1.0)
                bn.bias.zero_()
    return m.eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=100)
    a = ap.parse_args(argv)
    if a.threads == 1:
        pin_one_core()
    import torch

    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    rss0 = current_rss_mb()
    eps = load_episodes("test_5w5s")
    sx = as_float(eps["support_x"][0])                      # [25, 1, 28, 28]
    ys = np.array(eps["support_y"])
    one = sx[:1].copy()
    tsx, tone = torch.from_numpy(sx), torch.from_numpy(one)
    onehot = torch.nn.functional.one_hot(torch.from_numpy(ys), 5).float()

    out = {"peer": "torch-eager", "torch": torch.__version__, "threads": a.threads,
           "mkldnn": bool(torch.backends.mkldnn.is_available()), "rss_after_import_mb": rss0, "forms": {}}
    z = {}
    for form in ("folded", "with_bn"):
        m = build(folded=form == "folded")
        with torch.inference_mode():
            z[form] = m(tsx).numpy().copy()

            def adapt() -> torch.Tensor:
                e = m(tsx)
                return (onehot.t() @ e) / onehot.sum(0).clamp_min(1.0)[:, None]

            out["forms"][form] = {
                "embed_ms_per_image": {"1": timeit(lambda: m(tone), a.warmup, a.repeat),
                                       "25": timeit(lambda: m(tsx), a.warmup, a.repeat, per=25)},
                "adapt_5w5s_ms": timeit(adapt, a.warmup, a.repeat),
            }
    out["peak_rss_mb_latency_phase"] = peak_rss_mb()     # before onnxruntime is imported for the check below

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    ref = ort.InferenceSession(str(BUNDLE / "backbone.onnx"), so, providers=["CPUExecutionProvider"])
    z_ref = ref.run(["embeddings"], {"images": sx})[0]
    for form in z:
        out["forms"][form]["max_abs_diff_vs_onnxruntime"] = float(np.abs(z[form] - z_ref).max())
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
