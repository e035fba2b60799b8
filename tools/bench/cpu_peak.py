"""The physical limit: conv4's FLOPs per 28x28 image and this CPU's single-core fp32 peak.

    .venv/bin/python tools/bench/cpu_peak.py

- FLOPs: from ``backbone.onnx`` itself: each Conv's output shape (shape inference at ``[1,1,28,28]``)
  x kernel size x input channels = MACs; FLOPs = 2 x MACs (bias, ReLU, max-pool are listed apart
  and are < 1 % of it).
- Peak: CPU model, flags and TSC from ``/proc/cpuinfo``; the core clock and the sustained FMA
  throughput measured by ``fma_peak.c`` (compiled here with gcc, run on core 0).
  Spec peak = SIMD fp32 lanes (16 with AVX-512F, 8 with AVX2+FMA) x 2 FLOPs per FMA x FMA units x
  clock; the number of 512-bit FMA units is read off the measurement (fma512 / (32 x clock) rounded),
  as /proc/cpuinfo does not tell it.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BUNDLE, HERE, WORK, emit  # noqa: E402


def conv_flops(path: Path = BUNDLE / "backbone.onnx") -> dict:
    import onnx
    from onnx import numpy_helper, shape_inference

    m = onnx.load(str(path))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    inf = shape_inference.infer_shapes(m)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inf.graph.value_info) + list(inf.graph.input) + list(inf.graph.output)}
    inits = {i.name: numpy_helper.to_array(i).shape for i in m.graph.initializer}
    layers, macs, other = [], 0, 0
    for n in m.graph.node:
        if n.op_type == "Conv":
            cout, cin, kh, kw = inits[n.input[1]]
            out = shapes[n.output[0]]
            mac = out[2] * out[3] * cout * cin * kh * kw
            layers.append({"conv": n.input[1].rsplit(".", 1)[0], "in": shapes[n.input[0]][1:], "out": out[1:],
                           "kernel": [cout, cin, kh, kw], "macs": int(mac)})
            macs += mac
            other += out[1] * out[2] * out[3]                       # bias adds
        elif n.op_type in ("Relu", "MaxPool"):
            s = shapes[n.input[0]]
            other += s[1] * s[2] * s[3]
    return {"layers": layers, "macs": int(macs), "flops": int(2 * macs), "other_ops": int(other),
            "input": [1, 28, 28]}


def cpu_info() -> dict:
    info: dict = {"model": platform.processor() or "?", "flags": []}
    txt = Path("/proc/cpuinfo").read_text()
    first = txt.split("\n\n")[0]
    for line in first.splitlines():
        k, _, v = line.partition(":")
        k, v = k.strip(), v.strip()
        if k == "model name":
            info["model"] = v
        elif k == "flags":
            info["flags"] = v.split()
        elif k == "model":
            info["model_number"] = v
        elif k in ("cpu family", "stepping", "cpu MHz", "bogomips", "cache size"):
            info[k.replace(" ", "_")] = v
    info["logical_cpus"] = txt.count("processor\t:")
    flags = set(info["flags"])
    info["simd"] = [f for f in ("avx2", "fma", "avx512f", "avx512_fp16", "avx512_bf16", "amx_tile", "amx_bf16")
                    if f in flags]
    info["hypervisor"] = "hypervisor" in flags
    info.pop("flags")
    return info


def measure_peak() -> dict:
    exe = WORK / "fma_peak"
    WORK.mkdir(parents=True, exist_ok=True)
    gcc = shutil.which("gcc")
    if gcc is None:
        return {"error": "gcc not found"}
    subprocess.run([gcc, "-O2", "-mavx2", "-mfma", "-mavx512f", str(HERE / "fma_peak.c"), "-o", str(exe)], check=True)
    has512 = "avx512f" in Path("/proc/cpuinfo").read_text()
    p = subprocess.run(["taskset", "-c", "0", str(exe)] + (["avx512"] if has512 else []),
                       capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


def main() -> int:
    cpu = cpu_info()
    peak = measure_peak()
    flops = conv_flops()
    lanes = 16 if "avx512f" in cpu["simd"] else 8 if {"avx2", "fma"} <= set(cpu["simd"]) else 4
    clock = peak.get("clock_ghz")
    units512 = None
    if peak.get("fma512_gflops") and clock:
        units512 = max(1, round(peak["fma512_gflops"] / (32 * clock)))
    units = units512 or 2
    spec = lanes * 2 * units * clock if clock else None
    emit({"cpu": cpu, "measured": peak, "conv4": flops,
          "spec_peak": {"lanes_fp32": lanes, "flops_per_fma": 2, "fma_units": units, "clock_ghz": clock,
                        "gflops": round(spec, 1) if spec else None,
                        "rule": f"{lanes} lanes x 2 (FMA) x {units} FMA units x {clock:.2f} GHz"},
          "sustained_peak_gflops": max(v for v in (peak.get("fma512_gflops"), peak.get("fma256_gflops")) if v)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
