"""Run every peer comparison in one go and write ``BENCHMARKS.md``.

    .venv/bin/python tools/bench/report.py            # ~15 min on 2 cores; creates the peer venvs if missing

Each peer runs in its own process with its own venv's python (``.venvs/*``, made by
``tools/bench/setup_peer_venvs.sh``) and answers one ``BENCH_JSON {...}`` line on stdout; this driver
collects them (raw: ``build/bench/results.json``), computes the ratios and writes ``BENCHMARKS.md``
at the repo root. Steps, in order, one process at a time:

1. ``episodes.py``: the test / validation / meta-training episodes every peer uses (``build/bench``).
2. ``cpu_peak.py``: conv4 FLOPs, CPU model and flags, measured clock and FMA peak.
3. ``edgemeta bench BUNDLE --json`` when the installed edgemeta has that command (recorded as is).
4. ``ort_training_peer.py artifacts`` and ``sweep``: the peer's training graphs, and its optimizer and
   learning rate picked on validation episodes.
5. ``--rounds`` interleaved rounds (default 5) of the timed comparisons, each in a fresh process:
   ``edgemeta_side.py runtime`` (edgemeta's device path, same harness as the peers; fp32, and int8 when
   the bundle ships an int8 backbone), ``torch_eager.py``, ``ort_training_peer.py bench`` (both
   variants), ``edgemeta_side.py train`` and ``easyfsl_peer.py`` (meta-training episodes/s; edgemeta's
   trainer runs twice, in the main venv with torch 2.13.0 CPU and in easyfsl's venv with torch 2.14.1,
   so one comparison has the same torch build on both sides). Accuracy on the test episodes is
   measured in the first round only (it is deterministic). Figures are medians over the rounds.
6. learn2learn: the recorded ``pip install learn2learn`` failure (``.venvs/learn2learn-install.log``).

``--from-results build/bench/results.json`` re-writes the report from an earlier run without measuring.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MARK, REPO, WORK, loadavg  # noqa: E402

PY = {
    "main": REPO / ".venv" / "bin" / "python",
    "ort": REPO / ".venvs" / "ort-training" / "bin" / "python",
    "easyfsl": REPO / ".venvs" / "easyfsl" / "bin" / "python",
}
BUNDLE_REL = "models/omniglot-conv4-proto"
LOG: list[str] = []


def rel(p: Path | str) -> str:
    p = Path(p)
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(p)


class Runner:
    def __init__(self, verbose: bool = True):
        self.results: dict[str, Any] = {}
        self.rounds: dict[str, list[dict[str, Any]]] = {}     # every run of a key, in order
        self.commands: list[tuple[str, str]] = []
        self.verbose = verbose

    def run(self, key: str, venv: str, args: list[str], env: dict[str, str] | None = None,
            timeout: int = 1800, what: str = "") -> dict[str, Any] | None:
        py = PY[venv]
        cmd = [str(py), *args]
        shown = " ".join(([f"{k}={v}" for k, v in (env or {}).items()]) + [rel(py)] + [shlex.quote(a) for a in args])
        if (what or key) not in [w for w, _ in self.commands]:     # later rounds repeat a command: list it once
            self.commands.append((what or key, shown))
        full_env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
        t0 = time.perf_counter()
        la0 = loadavg()
        self.log(f"[{key}] {shown}")
        try:
            p = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.results[key] = {"error": f"timed out after {timeout} s", "command": shown}
            self.log(f"[{key}] TIMEOUT")
            return None
        secs = round(time.perf_counter() - t0, 1)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith(MARK)]
        if p.returncode != 0 or not lines:
            err = (p.stderr or p.stdout).strip().splitlines()[-15:]
            self.results[key] = {"error": f"exit {p.returncode}", "stderr_tail": err, "command": shown}
            self.log(f"[{key}] FAILED exit {p.returncode}: " + " | ".join(err[-3:]))
            return None
        res = json.loads(lines[-1][len(MARK):])
        res["_seconds"], res["_command"], res["_loadavg_before"] = secs, shown, la0
        self.results[key] = res
        self.rounds.setdefault(key, []).append(res)
        self.log(f"[{key}] done in {secs} s")
        return res

    def log(self, s: str) -> None:
        LOG.append(s)
        if self.verbose:
            print(s, file=sys.stderr, flush=True)


def versions(venv: str, pkgs: list[str]) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, sys\nout = {}\nfor p in sys.argv[1:]:\n    try: out[p] = m.version(p)\n"
            "    except m.PackageNotFoundError: pass\nprint(json.dumps(out))")
    try:
        p = subprocess.run([str(PY[venv]), "-c", code, *pkgs], capture_output=True, text=True, timeout=120)
        return json.loads(p.stdout)
    except Exception as e:  # noqa: BLE001
        return {"error": str(e)}


def edgemeta_bench(r: Runner) -> None:
    exe = PY["main"].parent / "edgemeta"
    shown = f"{rel(exe)} bench {BUNDLE_REL} --json"
    probe = subprocess.run([str(exe), "bench", "--help"], capture_output=True, text=True, cwd=REPO)
    if probe.returncode != 0:
        r.results["edgemeta_bench"] = {"available": False, "note": "`edgemeta bench` is not available in this "
                                       "checkout; edgemeta's side is measured by tools/bench/edgemeta_side.py only"}
        r.log("[edgemeta_bench] not available")
        return
    r.commands.append(("edgemeta's own bench command", shown))
    r.log(f"[edgemeta_bench] {shown}")
    t0 = time.perf_counter()
    try:
        p = subprocess.run([str(exe), "bench", BUNDLE_REL, "--json"], capture_output=True, text=True, cwd=REPO,
                           timeout=1800)
    except subprocess.TimeoutExpired:
        r.results["edgemeta_bench"] = {"available": True, "error": "timed out"}
        return
    try:
        obj = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else None
    except (json.JSONDecodeError, IndexError):
        obj = None
    if obj is None:
        r.results["edgemeta_bench"] = {"available": True, "error": f"exit {p.returncode}",
                                       "stderr_tail": p.stderr.strip().splitlines()[-10:]}
        r.log(f"[edgemeta_bench] FAILED exit {p.returncode}")
        return
    r.results["edgemeta_bench"] = {"available": True, "seconds": round(time.perf_counter() - t0, 1), "result": obj}
    r.log("[edgemeta_bench] done")


def source_state() -> dict[str, Any]:
    """Which edgemeta was measured: git HEAD, whether edgemeta/ differs from it, a digest of edgemeta/**/*.py."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted((REPO / "edgemeta").rglob("*.py")):
        h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
        except Exception:  # noqa: BLE001
            return ""
    changed = [ln[3:] for ln in git("status", "--porcelain", "--", "edgemeta").splitlines()]
    return {"git_head": git("rev-parse", "--short", "HEAD"), "edgemeta_changed_files": changed,
            "edgemeta_py_sha256": h.hexdigest()[:16]}


def l2l_failure() -> dict[str, Any]:
    log = REPO / ".venvs" / "learn2learn-install.log"
    rc = REPO / ".venvs" / "learn2learn-install.rc"
    if not log.exists():
        subprocess.run(["bash", str(REPO / "tools" / "bench" / "setup_peer_venvs.sh"), "learn2learn"], cwd=REPO)
    if not log.exists():
        return {"attempted": False}
    text = log.read_text(errors="replace")
    keep = [ln.strip() for ln in text.splitlines()
            if re.search(r"fatal error|error: |ERROR:|Failed to build|Successfully installed learn2learn", ln)
            and "WARNING: Location" not in ln]
    m = re.search(r"Downloading (learn2learn-[\w.]+\.tar\.gz)", text)
    return {"attempted": True, "exit_code": rc.read_text().strip() if rc.exists() else "?",
            "sdist": m.group(1) if m else None, "error_lines": keep[:8],
            "log": rel(log), "installed": "Successfully installed" in text and "learn2learn" in text.split("Successfully installed")[-1]}


def merge_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several runs of the same measurement: every number becomes the median over the
    runs that have it (a timing's ``ms`` is then the median of the per-run medians); anything else
    (strings, lists such as per-episode accuracies) is taken from the first run that has it."""
    import statistics

    def merge(vals: list[Any]) -> Any:
        vals = [v for v in vals if v is not None]
        if not vals:
            return None
        if all(isinstance(v, dict) for v in vals):
            keys = list(dict.fromkeys(k for v in vals for k in v))
            return {k: merge([v.get(k) for v in vals]) for k in keys}
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            m = statistics.median(vals)
            return round(m, 6) if isinstance(m, float) else m
        return vals[0]

    out = merge(runs)
    out["_rounds"] = len(runs)
    return out


# --------------------------------------------------------------------------------------- report

def fmt(x: float | None, nd: int = 2) -> str:
    if x is None:
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 0.1:
        return f"{x:.{nd}f}"
    return f"{x:.{nd + 2}f}"


def t(d: dict | None) -> str:
    """'cpu (wall)' for a timeit result."""
    if not d:
        return "n/a"
    return f"{fmt(d['cpu']['median'])} ({fmt(d['wall']['median'])})"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def g(d: dict | None, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def paired(a: dict | None, b: dict | None) -> tuple[float, float, int] | None:
    """Mean and 95% CI of the per-episode accuracy difference a - b (same episodes, paired)."""
    ea, eb = g(a, "per_episode"), g(b, "per_episode")
    if not ea or not eb or len(ea) != len(eb):
        return None
    import numpy as np

    d = np.asarray(ea) - np.asarray(eb)
    return float(d.mean()), float(1.96 * d.std(ddof=1) / np.sqrt(len(d))), int(len(d))


def rng(d: dict | None) -> str:
    """p10-p90 of CPU time."""
    if not d:
        return "n/a"
    return f"{fmt(d['cpu']['p10'])}-{fmt(d['cpu']['p90'])}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**pass**" if ok else "**not met**")


def judge(ratio_of_medians: float | None, rounds: list[float], target: float, strict: bool = False) -> str:
    """pass: the ratio of the median figures, the median per-round ratio and every round reach the target;
    not met: none of them does; borderline: anything in between (the verdict depends on the statistic)."""
    if ratio_of_medians is None:
        return "n/a"
    ok = (lambda v: v > target) if strict else (lambda v: v >= target)  # noqa: E731
    import statistics

    checks = [ok(ratio_of_medians)] + ([ok(statistics.median(rounds))] + [ok(v) for v in rounds] if rounds else [])
    if all(checks):
        return "**pass**"
    if not any(checks):
        return "**not met**"
    return "**borderline**"


def write_report(r: Runner, meta: dict[str, Any], out: Path) -> None:
    R = r.results
    em, em8 = R.get("edgemeta_runtime_fp32"), R.get("edgemeta_runtime_int8")
    te = R.get("torch_eager")
    sweep, ob, oh = R.get("ort_sweep"), R.get("ort_backbone"), R.get("ort_head")
    tr_e, tr_e2, tr_f = R.get("train_edgemeta"), R.get("train_edgemeta_torch2141"), R.get("train_easyfsl")
    cpu = R.get("cpu_peak") or {}
    L: list[str] = []
    A = L.append

    A("# Benchmarks: edgemeta against its peers")
    A("")
    A(f"Written by `tools/bench/report.py` from one run on {meta['date']} ({meta['seconds'] / 60:.1f} min, all peers "
      "on this machine, one after the other). Every figure below comes from that run; raw results, every round: "
      "`build/bench/results.json` (not committed). Re-run with the commands at the end.")
    A("")
    A("## Machine")
    A("")
    c = cpu.get("cpu", {})
    m = cpu.get("measured", {})
    A(f"- CPU: {c.get('model', '?')} (family {c.get('cpu_family', '?')}, model {c.get('model_number', '?')}, "
      f"stepping {c.get('stepping', '?')}), {c.get('logical_cpus', '?')} cores visible, KVM guest: "
      f"{'yes' if c.get('hypervisor') else 'no'}; SIMD: {', '.join(c.get('simd', []))}; TSC {c.get('cpu_MHz', '?')} MHz; "
      f"measured core clock {fmt(m.get('clock_ghz'))} GHz (scalar), L3 {c.get('cache_size', '?')}.")
    A(f"- Memory: {meta['mem_gb']} GB. OS: {meta['platform']}. Python {meta['python']}.")
    src = meta.get("edgemeta_source") or {}
    if src:
        ch = src.get("edgemeta_changed_files") or []
        A(f"- edgemeta measured: git {src.get('git_head')} " + (f"plus uncommitted changes in {len(ch)} files under "
          f"`edgemeta/` (work in progress by others)" if ch else "(clean)") +
          f"; sha256 of `edgemeta/**/*.py`: `{src.get('edgemeta_py_sha256')}`.")
    A(f"- Load: this machine is shared with other sessions; load average {meta['load_start']} at the start and "
      f"{meta['load_end']} at the end of the run (2 cores). See *How it is measured*.")
    A("- Versions:")
    for k, v in meta["versions"].items():
        A(f"  - `{k}`: " + ", ".join(f"{p} {x}" for p, x in v.items()))
    A("")

    # ---------------- goals
    e25, t25 = g(em, "embed_ms_per_image", "25", "ms"), g(te, "forms", "folded", "embed_ms_per_image", "25", "ms")
    e1 = g(em, "embed_ms_per_image", "1", "ms")
    tb25 = g(te, "forms", "with_bn", "embed_ms_per_image", "25", "ms")
    ea = g(em, "adapt_5w5s_ms", "with_embedding", "ms")
    ta = g(te, "forms", "folded", "adapt_5w5s_ms", "ms")
    oba, oha = g(ob, "adapt_5w5s_ms", "ms"), g(oh, "adapt_5w5s_ms", "ms")
    eacc, obacc, ohacc = g(em, "accuracy"), g(ob, "accuracy"), g(oh, "accuracy")
    r_embed = ratio(t25, e25)
    r_ob, r_oh = ratio(oba, ea), ratio(oha, ea)
    acc_ok = None
    if eacc and obacc and ohacc:
        acc_ok = eacc["mean"] >= obacc["mean"] and eacc["mean"] >= ohacc["mean"]
    tr_ratio = ratio(g(tr_e, "episodes_per_s_cpu"), g(tr_f, "episodes_per_s_cpu"))
    tr_ratio_same = ratio(g(tr_e2, "episodes_per_s_cpu"), g(tr_f, "episodes_per_s_cpu"))
    tr_ratio_wall = ratio(g(tr_e, "episodes_per_s_wall"), g(tr_f, "episodes_per_s_wall"))
    flops = g(cpu, "conv4", "flops")
    sustained = cpu.get("sustained_peak_gflops")
    spec = g(cpu, "spec_peak", "gflops")
    achieved = flops / (e25 * 1e-3) / 1e9 if flops and e25 else None

    RR = r.rounds

    def per_round(num_key: str, num_path: tuple, den_key: str, den_path: tuple) -> list[float]:
        out = []
        for x, y in zip(RR.get(num_key, []), RR.get(den_key, [])):
            q = ratio(g(x, *num_path), g(y, *den_path))
            if q is not None:
                out.append(q)
        return out

    rr = {
        "embed": per_round("torch_eager", ("forms", "folded", "embed_ms_per_image", "25", "ms"),
                           "edgemeta_runtime_fp32", ("embed_ms_per_image", "25", "ms")),
        "ob": per_round("ort_backbone", ("adapt_5w5s_ms", "ms"), "edgemeta_runtime_fp32", ("adapt_5w5s_ms", "with_embedding", "ms")),
        "oh": per_round("ort_head", ("adapt_5w5s_ms", "ms"), "edgemeta_runtime_fp32", ("adapt_5w5s_ms", "with_embedding", "ms")),
        "tr": per_round("train_edgemeta", ("episodes_per_s_cpu",), "train_easyfsl", ("episodes_per_s_cpu",)),
        "tr_same": per_round("train_edgemeta_torch2141", ("episodes_per_s_cpu",), "train_easyfsl", ("episodes_per_s_cpu",)),
    }

    def rounds_note(k: str, target: float | None = None) -> str:
        v = rr.get(k) or []
        if len(v) < 2:
            return ""
        import statistics

        s_ = "; rounds: " + ", ".join(f"{x:.2f}x" for x in v) + f", median {statistics.median(v):.2f}x"
        if target is not None:
            met = sum(x >= target for x in v)
            s_ += f" ({met} of {len(v)} at target)"
        return s_

    n_rounds = meta.get("rounds", 1)
    A("## Goals of the peer comparison, as measured")
    A("")
    A("Times are medians of CPU time on one pinned core, one thread (wall-clock medians in brackets); "
      "ratios use the CPU-time medians." + (f" Each timed comparison ran in {n_rounds} interleaved rounds (separate "
      "processes); figures are medians over the rounds and the per-round ratios follow each one." if n_rounds > 1 else ""))
    A("")
    A("| goal | target | measured | result |")
    A("| --- | --- | --- | --- |")
    A(f"| embedding, onnxruntime vs torch eager, batch 25, 1 thread | >= 3x faster | **{fmt(r_embed)}x** "
      f"({fmt(e25, 3)} vs {fmt(t25, 3)} ms/image{rounds_note('embed', 3)}) | {judge(r_embed, rr['embed'], 3)} |")
    A(f"| 5w5s adapt incl. embedding vs ORT on-device training, backbone in the graph | >= 20x faster | **{fmt(r_ob)}x** "
      f"({fmt(ea)} vs {fmt(oba)} ms{rounds_note('ob', 20)}) | {judge(r_ob, rr['ob'], 20)} |")
    A(f"| 5w5s adapt incl. embedding vs ORT on-device training, head only (embeddings first) | faster | **{fmt(r_oh)}x** "
      f"({fmt(ea)} vs {fmt(oha)} ms{rounds_note('oh', 1.0)}) | {judge(r_oh, rr['oh'], 1.0, strict=True)} |")
    pd = paired(eacc, obacc)
    if eacc and obacc and ohacc:
        sig = ""
        if pd:
            lo, hi = pd[0] - pd[1], pd[0] + pd[1]
            sig = (f"; paired difference {pd[0]:+.2f} ± {pd[1]:.2f} points"
                   + (" (significant)" if lo > 0 or hi < 0 else " (not significant)"))
        A(f"| ... at equal or better accuracy (5w5s, {eacc['episodes']} test episodes) | edgemeta >= peer | "
          f"{eacc['mean']:.2f} ± {eacc['ci95']:.2f} vs {obacc['mean']:.2f} ± {obacc['ci95']:.2f} (backbone) / "
          f"{ohacc['mean']:.2f} ± {ohacc['ci95']:.2f} (head) %{sig} | {verdict(acc_ok)} |")
    A(f"| meta-training episodes/s vs easyfsl Prototypical Networks (60w1s5q, conv4, CPU, 1 thread) | >= 1.5x | "
      f"**{fmt(tr_ratio)}x** ({fmt(g(tr_e, 'episodes_per_s_cpu'), 3)} vs {fmt(g(tr_f, 'episodes_per_s_cpu'), 3)} ep/s{rounds_note('tr', 1.5)}); "
      f"same torch 2.14.1 on both sides: {fmt(tr_ratio_same)}x{rounds_note('tr_same', 1.5)} | {judge(tr_ratio, rr['tr'], 1.5)} |")
    if achieved:
        A(f"| physical limit: fp32 embedding vs this core's peak | (state it) | {fmt(achieved)} GFLOP/s of "
          f"{fmt(sustained)} sustained ({100 * achieved / sustained:.0f}%) / {fmt(spec)} spec "
          f"({100 * achieved / spec:.0f}%) | — |")
    A("")

    # ---------------- 1. torch eager
    A("## 1. Embedding and adaptation: onnxruntime (edgemeta) vs torch eager")
    A("")
    A("Same conv4 weights (the shipped bundle's `backbone.onnx`; the torch model is the textbook conv4 in plain "
      "torch, Conv -> ReLU -> MaxPool as in the graph, rebuilt from its initializers, "
      f"max |difference| of the embeddings vs onnxruntime: {g(te, 'forms', 'folded', 'max_abs_diff_vs_onnxruntime') or 0:.1e}). "
      "Input: preprocessed `float32 [N,1,28,28]`; 5w5s adapt = embed the 25 support images + prototypes. "
      "One thread: `intra_op_num_threads=1` (edgemeta, `Bundle.load(threads=1)`), `torch.set_num_threads(1)` + "
      "`inference_mode()` (torch); process pinned to core 0.")
    A("")
    A("| ms, CPU (wall) | edgemeta onnxruntime fp32 | torch eager, BN folded (same graph) | torch eager, with BatchNorm | speed-up vs folded |")
    A("| --- | --- | --- | --- | --- |")
    for lab, ek, tk in (("embed, batch 1, per image", ("embed_ms_per_image", "1"), ("embed_ms_per_image", "1")),
                        ("embed, batch 25, per image", ("embed_ms_per_image", "25"), ("embed_ms_per_image", "25"))):
        A(f"| {lab} | {t(g(em, *ek))} | {t(g(te, 'forms', 'folded', *tk))} | {t(g(te, 'forms', 'with_bn', *tk))} | "
          f"{fmt(ratio(g(te, 'forms', 'folded', *tk, 'ms'), g(em, *ek, 'ms')))}x |")
    A(f"| adapt 5w5s incl. embedding | {t(g(em, 'adapt_5w5s_ms', 'with_embedding'))} | {t(g(te, 'forms', 'folded', 'adapt_5w5s_ms'))} | "
      f"{t(g(te, 'forms', 'with_bn', 'adapt_5w5s_ms'))} | {fmt(ratio(ta, ea))}x |")
    A(f"| peak RSS of the process after these timings, MB | {fmt(g(em, 'peak_rss_mb_adapt_phase'))} | "
      f"{fmt(g(te, 'peak_rss_mb_latency_phase'))} (torch + onnx imported; both forms in one process) | | |")
    A("")
    A(f"Also measured on the edgemeta side: adapt from embeddings only {t(g(em, 'adapt_5w5s_ms', 'embeddings_only'))} ms; "
      f"`FewShotClassifier.fit` on the same 25 raw 28x28 images (preprocessing + labels included) "
      f"{t(g(em, 'adapt_5w5s_ms', 'classifier_fit_raw_images'))} ms; classify {t(g(em, 'classify_ms_per_query'))} ms per query "
      f"from embeddings; loading the bundle (read, sha256 checks, three sessions) {fmt(g(em, 'cold_start_load_ms'))} ms.")
    if em8:
        A(f"With the bundle's int8 backbone (`precision='int8'`): embed {t(g(em8, 'embed_ms_per_image', '1'))} / "
          f"{t(g(em8, 'embed_ms_per_image', '25'))} ms per image at batch 1 / 25, adapt 5w5s "
          f"{t(g(em8, 'adapt_5w5s_ms', 'with_embedding'))} ms, accuracy {g(em8, 'accuracy', 'mean')} ± "
          f"{g(em8, 'accuracy', 'ci95')} % on the same episodes (the goals above use fp32, the same graph as the peers).")
    elif R.get("edgemeta_runtime_int8", {}).get("error") if isinstance(R.get("edgemeta_runtime_int8"), dict) else False:
        A(f"int8: not measured ({R['edgemeta_runtime_int8']['error']}).")
    A("")

    # ---------------- 2. ORT training
    A("## 2. Adaptation: edgemeta vs ONNX Runtime on-device training")
    A("")
    A("Peer: `onnxruntime-training-cpu` 1.19.2 (last release), own venv; `onnxruntime.training.artifacts.generate_artifacts` "
      "builds the training, eval and optimizer graphs from the same `backbone.onnx` (IR 8, opset 17: loaded as is; "
      "generated graphs capped at IR 9) plus a linear head `Gemm` `[5,64]`+`[5]` initialised to zero and "
      "`SoftmaxCrossEntropyLoss`; `onnxruntime.training.api` (`CheckpointState`, `Module`, `Optimizer`) trains it "
      "for **10 steps** on the 25 support images (full batch). Device side imports only `onnxruntime.training.api`; "
      "torch is blocked in that process, so its RSS has no torch in it.")
    A("")
    if sweep and "best" in sweep:
        b = sweep["best"]
        A(f"Optimizer and learning rate, chosen for the peer on **validation** classes ({sweep['episodes']} 5w5s episodes "
          f"of the Vinyals val split, never the test episodes): best **{b['optimizer']} lr {b['lr']}** "
          f"({b['val_accuracy']:.2f} ± {b['ci95']:.2f} %). The full sweep (10 steps, head from zero):")
        A("")
        A("| optimizer | " + " | ".join(f"lr {row['lr']}" for row in sweep["sweep"] if row["optimizer"] == "adamw") + " |")
        A("| --- |" + " --- |" * len([row for row in sweep["sweep"] if row["optimizer"] == "adamw"]))
        A("| AdamW | " + " | ".join(f"{row['val_accuracy']:.2f}" for row in sweep["sweep"] if row["optimizer"] == "adamw") + " |")
        A("")
        A("| optimizer | " + " | ".join(f"lr {row['lr']}" for row in sweep["sweep"] if row["optimizer"] == "sgd") + " |")
        A("| --- |" + " --- |" * len([row for row in sweep["sweep"] if row["optimizer"] == "sgd"]))
        A("| SGD | " + " | ".join(f"{row['val_accuracy']:.2f}" for row in sweep["sweep"] if row["optimizer"] == "sgd") + " |")
        A("")
    A("Latency: median over repeats after warm-up, 1 thread, pinned core; ORT adapt = (head variant: embed the 25 "
      "support images with an onnxruntime 1.19.2 `InferenceSession`) + 10 x (`Module(x, y)`, `Optimizer.step()`, "
      "`lazy_reset_grad()`), on one reused `Module` whose head is reset to zero before each repeat. Building a new "
      "task's `CheckpointState` + `Module` + `Optimizer` (needed to reset AdamW's moments) is listed apart and *not* "
      "counted: the most favourable reading for the peer. Accuracy: every test episode gets a fresh checkpoint, "
      "module and optimizer.")
    A("")
    A("| 5-way 5-shot | edgemeta (proto, fp32) | ORT training, backbone in graph | ORT training, head only |")
    A("| --- | --- | --- | --- |")
    A(f"| adapt latency incl. embedding, ms CPU (wall) | {t(g(em, 'adapt_5w5s_ms', 'with_embedding'))} | "
      f"{t(g(ob, 'adapt_5w5s_ms'))} | {t(g(oh, 'adapt_5w5s_ms'))} |")
    A(f"| p10-p90 of that, ms CPU | {rng(g(em, 'adapt_5w5s_ms', 'with_embedding'))} | {rng(g(ob, 'adapt_5w5s_ms'))} | "
      f"{rng(g(oh, 'adapt_5w5s_ms'))} |")
    A(f"| edgemeta faster by | | **{fmt(r_ob)}x** | **{fmt(r_oh)}x** |")
    A(f"| of which the 10 training steps alone | {t(g(em, 'adapt_5w5s_ms', 'embeddings_only'))} (adapt.onnx, no steps) | "
      f"(all of it) | {t(g(oh, 'train_steps_only_ms'))} |")
    A(f"| new-task setup, not counted above, ms (median) | none (adapt is stateless) | {fmt(g(ob, 'task_setup_ms_median'))} | "
      f"{fmt(g(oh, 'task_setup_ms_median'))} |")
    A(f"| cold start, ms (load + sessions) | {fmt(g(em, 'cold_start_load_ms'))} | {fmt(g(ob, 'cold_start_ms'))} | {fmt(g(oh, 'cold_start_ms'))} |")
    A(f"| peak RSS after load + the adapt timings, MB | {fmt(g(em, 'peak_rss_mb_adapt_phase'))} | "
      f"{fmt(g(ob, 'peak_rss_mb_adapt_phase'))} | {fmt(g(oh, 'peak_rss_mb_adapt_phase'))} |")
    first = lambda k: (RR.get(k) or [R.get(k) or {}])[0]  # noqa: E731  (the round that ran the accuracy episodes)
    A(f"| peak RSS at exit (after the {g(eacc, 'episodes')} accuracy episodes), MB | {fmt(g(first('edgemeta_runtime_fp32'), 'peak_rss_mb_at_exit'))} | "
      f"{fmt(g(first('ort_backbone'), 'peak_rss_mb_at_exit'))} | {fmt(g(first('ort_head'), 'peak_rss_mb_at_exit'))} |")
    if eacc and obacc and ohacc:
        A(f"| accuracy, % ± 95% CI ({eacc['episodes']} episodes) | **{eacc['mean']:.2f} ± {eacc['ci95']:.2f}** | "
          f"{obacc['mean']:.2f} ± {obacc['ci95']:.2f} | {ohacc['mean']:.2f} ± {ohacc['ci95']:.2f} |")
    A("")
    if oh and em:
        steps = g(oh, "train_steps_only_ms", "ms")
        emb = (oha - steps) if oha and steps else None
        e_p90, h_p10 = g(em, "adapt_5w5s_ms", "with_embedding", "cpu", "p90"), g(oh, "adapt_5w5s_ms", "cpu", "p10")
        overlap = ("edgemeta's slowest decile is still faster than the peer's fastest (p90 "
                   f"{fmt(e_p90)} < p10 {fmt(h_p10)} ms), but another run on a busier machine could narrow it"
                   if e_p90 is not None and h_p10 is not None and e_p90 < h_p10 else
                   "the two p10-p90 ranges overlap, so the order can flip from run to run")
        A(f"Reading the head-only column: both sides spend almost all of the adapt in the same conv4 forward pass "
          f"over 25 images (edgemeta: onnxruntime {g(em, 'onnxruntime')}; the peer: its own onnxruntime "
          f"{g(oh, 'onnxruntime')}, about {fmt(emb)} ms). The difference is the head: 10 {str(g(oh, 'optimizer')).replace('adamw', 'AdamW').replace('sgd', 'SGD')} steps through "
          f"`onnxruntime.training` take {fmt(steps)} ms, edgemeta's `adapt.onnx` (class means) "
          f"{fmt(g(em, 'adapt_5w5s_ms', 'embeddings_only', 'ms'))} ms. So the margin is small: {overlap}. The "
          f"backbone-in-graph variant is slow because every one of the 10 steps re-runs the backbone forward in a training session "
          f"({fmt(oba / 10 if oba else None)} ms per step, against {fmt(g(em, 'embed_ms_per_image', '25', 'ms') * 25 if em else None)} ms "
          f"for the same 25 images in an inference session).")
        A("")
        if pd:
            A(f"Accuracy is compared on the same episodes: per-episode difference edgemeta - ORT training "
              f"{pd[0]:+.2f} ± {pd[1]:.2f} points (95% CI, paired, {pd[2]} episodes). The two ORT variants compute the "
              f"same function (frozen backbone), hence the same accuracy.")
            A("")
    if eacc:
        A(f"Episodes: Omniglot, Vinyals split, test classes ({g(R, 'episodes', 'test_classes')} characters, no rotations), "
          f"5-way 5-shot 15 queries per class, `edgemeta.data.EpisodeSampler(seed={eacc['seed']})` episodes 0..{eacc['episodes'] - 1}, "
          "exported once to `build/bench/test_5w5s/*.npy` and read by both sides (the ORT venv has no edgemeta).")
        A("")

    # ---------------- 3. meta-training
    A("## 3. Meta-training throughput: edgemeta vs easyfsl")
    A("")
    if tr_e and tr_f:
        A(f"Episode: {tr_e['episode']} Omniglot 28x28 (Vinyals train split with rotations), the same "
          f"{tr_e['warmup_steps'] + tr_e['measured_steps']} episodes for both (`build/bench/train_60w1s5q`); conv4 "
          "(4 x conv3x3-64, BatchNorm, ReLU, maxpool2: easyfsl's peer in that textbook order; edgemeta's module as this "
          "checkout defines it, which may apply max-pool before ReLU, the same function), Prototypical loss, Adam "
          "lr 1e-3, CPU, `torch.set_num_threads(1)`, "
          f"pinned core. {tr_e['warmup_steps']} warm-up steps, then {tr_e['measured_steps']} timed steps (forward, loss, "
          "backward, optimizer step); data loading excluded on both sides.")
        A("")
        A("- edgemeta: `edgemeta.train.trainer.meta_train(TrainConfig(ways=60, shots=1, queries=5, ...))` itself; "
          "each call of its step function is timed (the step still gathers the episode's images from the training "
          "tensor); episode indices are served precomputed. One backbone pass over support+query, squared "
          "Euclidean distance with a learned scale.")
        A("- easyfsl 1.5.0: `PrototypicalNetworks(conv4)`, its documented episodic step (`process_support_set` "
          "then `model(query)`, `CrossEntropyLoss`, two backbone passes), episodes pre-converted to tensors. "
          "easyfsl imports torchvision, so its venv has torch 2.14.1 + torchvision 0.29.1 (CUDA build, on the CPU).")
        A("")
        A("| 1 thread | torch | episodes/s (CPU time) | episodes/s (wall) | step ms, median CPU (wall) |")
        A("| --- | --- | --- | --- | --- |")
        tr_fcl = R.get("train_easyfsl_channels_last")
        for lab, d in (("edgemeta meta_train", tr_e), ("edgemeta meta_train, in easyfsl's venv", tr_e2),
                       ("easyfsl PrototypicalNetworks (its documented step)", tr_f),
                       ("easyfsl, model + episodes moved to channels_last by hand (not a goal peer)", tr_fcl)):
            if d:
                A(f"| {lab} | {d['torch']} | {fmt(d['episodes_per_s_cpu'], 3)} | {fmt(d['episodes_per_s_wall'], 3)} | "
                  f"{fmt(d['step_ms_median_cpu'])} ({fmt(d['step_ms_median_wall'])}) |")
        A("")
        A(f"- edgemeta / easyfsl: **{fmt(tr_ratio)}x** (CPU time; {fmt(tr_ratio_wall)}x wall){rounds_note('tr', 1.5)}. "
          f"Goal >= 1.5x: {judge(tr_ratio, rr['tr'], 1.5)}.")
        A(f"- With the same torch 2.14.1 build on both sides (edgemeta's trainer run in easyfsl's venv): "
          f"**{fmt(tr_ratio_same)}x**{rounds_note('tr_same', 1.5)}: {judge(tr_ratio_same, rr['tr_same'], 1.5)} on this reading.")
        A("")
        if flops and sustained:
            n_img = 360
            step_gflop = 3 * n_img * flops / 1e9        # forward + backward (grad wrt inputs and weights) ~ 3x forward
            cfg = tr_e.get("config") or {}
            cl = cfg.get("channels_last")
            gf = lambda d: step_gflop / (d["step_ms_median_cpu"] / 1e3) if d else None  # noqa: E731
            A(f"Where the difference is: one 60w1s5q step is {n_img} images through conv4 forward and backward, about "
              f"3 x {n_img} x {flops / 1e6:.2f} MFLOP = {step_gflop:.1f} GFLOP, in torch's own CPU convolution kernels on "
              f"both sides: edgemeta's step runs at {fmt(gf(tr_e))} GFLOP/s, easyfsl's at {fmt(gf(tr_f))} GFLOP/s "
              f"({100 * gf(tr_e) / sustained:.0f}% and {100 * gf(tr_f) / sustained:.0f}% of the core's sustained peak). "
              + (f"edgemeta's `TrainConfig` in this checkout has `channels_last={cl}`"
                 + (" (NHWC activations and weights); easyfsl's documented step keeps torch's default NCHW layout. "
                    if cl else "; ") if cl is not None else "This checkout's `TrainConfig` has no `channels_last` field. ")
              + (f"The same easyfsl step with its model and episodes moved to `channels_last` by hand runs at "
                 f"{fmt(g(tr_fcl, 'episodes_per_s_cpu'), 3)} episodes/s, so edgemeta / that = "
                 f"{fmt(ratio(g(tr_e, 'episodes_per_s_cpu'), g(tr_fcl, 'episodes_per_s_cpu')))}x: a large part of "
                 "edgemeta's margin is the memory layout, which an easyfsl user can also set by hand. The remainder is not "
                 "broken down here (one visible difference: edgemeta runs the backbone once over support + query, easyfsl "
                 "twice, which changes BatchNorm's batches and the kernels' batch sizes, not the FLOPs)." if tr_fcl else "")
              + " The episode loop itself costs little on either side; a larger gain would have to come from the "
                "convolution kernels (fused or compiled training step).")
            A("")
            if cfg:
                A("edgemeta's trainer was measured as this checkout has it (git state and source digest in *Machine*; "
                  "others are working on `edgemeta/` and its speed moved during this work). Its run configuration: " + ", ".join(
                      f"`{k}={cfg[k]}`" for k in ("ways", "shots", "queries", "lr", "episodes_per_step", "augment",
                                                  "amp", "channels_last", "device") if k in cfg) + ".")
                A("")
    else:
        A("Not measured: " + json.dumps({k: R.get(k, {}).get("error") for k in ("train_edgemeta", "train_easyfsl")}))
        A("")

    # ---------------- 4. learn2learn
    l2l = R.get("learn2learn", {})
    A("## 4. learn2learn")
    A("")
    if l2l.get("attempted") and not l2l.get("installed"):
        A(f"`pip install learn2learn` in a fresh Python {meta['python']} venv (after `pip install torch==2.13.0`) "
          f"fails (exit {l2l.get('exit_code')}): pip finds no wheel for CPython 3.11, downloads the sdist "
          f"(`{l2l.get('sdist') or 'learn2learn-0.2.0.tar.gz'}`) and building it fails:")
        A("")
        A("```")
        for ln in l2l.get("error_lines", []):
            A(ln[:240])
        A("```")
        A("")
        A("Its Cython-generated C (`learn2learn/data/meta_dataset.c`) includes `longintrepr.h`, which CPython 3.11 moved "
          "to `cpython/longintrepr.h`; so no learn2learn figure here. Full log: `.venvs/learn2learn-install.log` "
          "(made by `tools/bench/setup_peer_venvs.sh learn2learn`).")
    elif l2l.get("installed"):
        A("`pip install learn2learn` succeeded on this machine; it is not benchmarked by this run.")
    else:
        A("Not attempted in this run.")
    A("")

    # ---------------- 5. physical limit
    A("## 5. The physical limit")
    A("")
    if flops:
        A("conv4 on one 28x28 image, counted from `backbone.onnx` (MACs = output H x W x C_out x C_in x 3 x 3; FLOPs = 2 x MACs):")
        A("")
        A("| conv | input | output | MACs |")
        A("| --- | --- | --- | --- |")
        for ly in cpu["conv4"]["layers"]:
            A(f"| {ly['conv']} | {'x'.join(map(str, ly['in']))} | {'x'.join(map(str, ly['out']))} | {ly['macs']:,} |")
        A(f"| **total** | | | **{cpu['conv4']['macs']:,} MACs = {flops / 1e6:.2f} MFLOP** (+{cpu['conv4']['other_ops']:,} bias/ReLU/max-pool ops) |")
        A("")
        sp = cpu.get("spec_peak", {})
        A(f"Single-core fp32 peak. /proc/cpuinfo names no SKU (\"{c.get('model')}\", a KVM guest) but its flags have "
          f"AVX-512F (16 fp32 lanes per FMA) and AMX/AVX512-FP16, i.e. a Sapphire Rapids or later Xeon core, which Intel "
          f"builds with two 512-bit FMA units (the measurement below agrees). `tools/bench/fma_peak.c` measures the core: a chain of dependent adds runs at "
          f"**{fmt(m.get('clock_ghz'))} GHz** (TSC says {c.get('cpu_MHz')} MHz: the core turbos above it); 12 independent "
          f"FMA chains sustain **{fmt(m.get('fma512_gflops'))} GFLOP/s** on zmm (512-bit) and {fmt(m.get('fma256_gflops'))} "
          f"on ymm (256-bit = 8 lanes x 2 x 2 units x clock, confirming two FMA ports); zmm / (32 x clock) = "
          f"{m.get('fma512_gflops', 0) / (32 * m.get('clock_ghz', 1)):.2f}, i.e. two 512-bit units, clocked a little lower "
          f"under AVX-512 load. Spec peak = {sp.get('rule')} = **{fmt(spec)} GFLOP/s**; sustained: **{fmt(sustained)} GFLOP/s**.")
        A("")
        A(f"edgemeta's fp32 embedding at batch 25 takes {fmt(e25, 3)} ms per image = **{fmt(achieved)} GFLOP/s, "
          f"{100 * achieved / sustained:.0f}% of the sustained peak** ({100 * achieved / spec:.0f}% of spec); the floor at "
          f"sustained peak would be {flops / (sustained * 1e9) * 1e3:.3f} ms per image. At batch 1: "
          f"{fmt(flops / (e1 * 1e-3) / 1e9)} GFLOP/s. torch eager at batch 25: {fmt(flops / (t25 * 1e-3) / 1e9) if t25 else 'n/a'} GFLOP/s"
          f"{'; with BatchNorm ' + fmt(flops / (tb25 * 1e-3) / 1e9) + ' GFLOP/s' if tb25 else ''}.")
        A("")

    # ---------------- edgemeta bench
    eb = R.get("edgemeta_bench", {})
    A("## `edgemeta bench`")
    A("")
    if eb.get("result"):
        A("`edgemeta bench models/omniglot-conv4-proto --json` (edgemeta's own command and protocol: wall-clock "
          "medians of its own repeats) in the same run, as it printed it:")
        A("")
        A("```json")
        A(json.dumps(eb["result"], indent=1)[:6000])
        A("```")
    else:
        A(eb.get("note") or f"`edgemeta bench` failed in this run: {eb.get('error')} {eb.get('stderr_tail', '')}")
    A("")

    # ---------------- method
    A("## How it is measured")
    A("")
    A("- One process per measurement, run one after the other (never two at once), each with its own venv's python; "
      "each prints one JSON line that `report.py` collects.")
    A("- Single-thread figures: the library's own setting (`intra_op_num_threads=1`, `inter_op_num_threads=1`; "
      "`torch.set_num_threads(1)`, `set_num_interop_threads(1)`) and the process pinned to core 0 "
      "(`os.sched_setaffinity`).")
    A("- The machine is shared (other sessions' jobs run beside this one: see the load averages above), so wall time "
      "includes waiting for a core. Every timed region runs on one thread, so its **CPU time** "
      "(`time.process_time`) is what an idle core would show as wall time; the tables give CPU-time medians and, in "
      "brackets, wall-clock medians, and the ratios use CPU time. Cache and frequency interference from the "
      "neighbours is not removed by this.")
    A("- Latencies: median of 50-100 repeats after 10-20 warm-up calls. Meta-training: sum over the timed steps.")
    A(f"- Rounds: the timed comparisons (edgemeta runtime, torch eager, both ORT training variants, the three "
      f"meta-training runs) ran {meta.get('rounds', 1)} times, interleaved, each time in a fresh process; a figure is the "
      "median over rounds of the per-round medians. Accuracy was measured in the first round (it is deterministic).")
    spread = []
    for lab, key, path in (("edgemeta embed b25", "edgemeta_runtime_fp32", ("embed_ms_per_image", "25", "ms")),
                           ("torch eager embed b25", "torch_eager", ("forms", "folded", "embed_ms_per_image", "25", "ms")),
                           ("ORT training adapt (backbone)", "ort_backbone", ("adapt_5w5s_ms", "ms")),
                           ("edgemeta meta-train ep/s", "train_edgemeta", ("episodes_per_s_cpu",)),
                           ("easyfsl meta-train ep/s", "train_easyfsl", ("episodes_per_s_cpu",))):
        v = [x for x in (g(run, *path) for run in RR.get(key, [])) if x]
        if len(v) > 1:
            spread.append(f"{lab} {max(v) / min(v):.2f}x")
    if spread:
        A("- Spread between rounds (slowest / fastest process) in this run: " + ", ".join(spread) + ". Single "
          "processes can differ by that much on this shared VM; hence the rounds.")
    A("- Peak RSS: `ru_maxrss` of the process, after imports, bundle / artifacts load and the latency phase "
      "(before the accuracy episodes), and at exit.")
    A("")

    # ---------------- commands
    A("## Reproduce")
    A("")
    A("```bash")
    A("python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 && .venv/bin/pip install -q -e '.[train]'")
    A("bash tools/bench/setup_peer_venvs.sh        # .venvs/ort-training, .venvs/easyfsl, the learn2learn attempt")
    A(".venv/bin/python tools/bench/report.py      # everything below, then writes BENCHMARKS.md")
    A("```")
    A("")
    A("The commands it ran (from the repo root), to re-run one measurement alone (the timed ones ran once per round; "
      "rounds after the first pass `--episodes 0`, latency only):")
    A("")
    A("```bash")
    for what, cmd in r.commands:
        A(f"# {what}")
        A(cmd)
    A("```")
    A("")
    out.write_text("\n".join(L) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--test-episodes", type=int, default=600, help="5w5s test episodes for accuracy (>= 200)")
    ap.add_argument("--val-episodes", type=int, default=200, help="validation episodes for the ORT lr sweep")
    ap.add_argument("--train-warmup", type=int, default=5)
    ap.add_argument("--train-measure", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the timed comparisons")
    ap.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    ap.add_argument("--no-setup", action="store_true", help="do not create missing peer venvs")
    ap.add_argument("--from-results", type=Path, default=None,
                    help="only re-write the report from a results.json of an earlier run (measures nothing)")
    a = ap.parse_args(argv)
    if a.from_results:
        saved = json.loads(a.from_results.read_text())
        r = Runner()
        r.results, r.commands = saved["results"], [tuple(c) for c in saved["commands"]]
        r.rounds = saved.get("rounds", {})
        write_report(r, saved["meta"], a.out)
        r.log(f"re-wrote {rel(a.out)} from {a.from_results}")
        return 0
    t_start = time.perf_counter()
    load_start = loadavg()
    r = Runner()

    missing = [k for k, p in PY.items() if not p.exists()]
    if "main" in missing:
        raise SystemExit("the main venv .venv is missing: see README.md (Set up and run)")
    if missing and not a.no_setup:
        r.log(f"creating peer venvs: {missing}")
        subprocess.run(["bash", str(REPO / "tools/bench/setup_peer_venvs.sh"), *missing], cwd=REPO, check=False)

    bench = "tools/bench/"
    # 1. episodes
    r.run("episodes_export", "main", [bench + "episodes.py", "--test-episodes", str(a.test_episodes),
                                      "--val-episodes", str(a.val_episodes),
                                      "--train-episodes", str(a.train_warmup + a.train_measure)],
          what="export the episodes every peer uses")
    ep_meta = {}
    for name in ("test_5w5s", "val_5w5s", "train_60w1s5q"):
        f = WORK / name / "meta.json"
        if f.exists():
            ep_meta[name] = json.loads(f.read_text())
    r.results["episodes"] = {"test_classes": g(ep_meta, "test_5w5s", "classes_in_part"), **ep_meta}
    # 2. cpu peak
    r.run("cpu_peak", "main", [bench + "cpu_peak.py"], what="conv4 FLOPs, CPU flags, measured clock and FMA peak")
    # 3. edgemeta bench
    edgemeta_bench(r)
    one = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    best = {"optimizer": "adamw", "lr": 0.01}
    if PY["ort"].exists():
        r.run("ort_artifacts", "ort", [bench + "ort_training_peer.py", "artifacts"], what="ORT training: generate_artifacts")
        sw = r.run("ort_sweep", "ort", [bench + "ort_training_peer.py", "sweep", "--episodes", str(a.val_episodes)], one,
                   what="ORT training: optimizer x lr on validation episodes")
        best = (sw or {}).get("best", best)
    tr = ["--threads", "1", "--warmup", str(a.train_warmup), "--measure", str(a.train_measure)]
    has_int8 = (REPO / BUNDLE_REL / "backbone.int8.onnx").exists()
    # 4-7. the timed comparisons, in `rounds` interleaved rounds (accuracy in the first round only):
    # on a shared machine one process can land in a slow period; each figure is then the median over
    # rounds, and each ratio is also given round by round.
    for i in range(a.rounds):
        n = str(a.test_episodes if i == 0 else 0)
        r.log(f"--- round {i + 1}/{a.rounds}")
        r.run("edgemeta_runtime_fp32", "main", [bench + "edgemeta_side.py", "runtime", "--precision", "fp32",
                                                "--episodes", n], one,
              what="edgemeta device path, fp32 (latency, RSS, accuracy on the test episodes; --episodes 0: latency only)")
        if has_int8:
            r.run("edgemeta_runtime_int8", "main", [bench + "edgemeta_side.py", "runtime", "--precision", "int8",
                                                    "--episodes", n], one, what="edgemeta device path, int8 backbone")
        r.run("torch_eager", "main", [bench + "torch_eager.py", "--threads", "1"], one, what="torch eager peer")
        if PY["ort"].exists():
            for variant in ("backbone", "head"):
                r.run(f"ort_{variant}", "ort", [bench + "ort_training_peer.py", "bench", "--variant", variant,
                                                "--optimizer", best["optimizer"], "--lr", str(best["lr"]),
                                                "--episodes", n], one,
                      what=f"ORT training peer, {variant} variant")
        r.run("train_edgemeta", "main", [bench + "edgemeta_side.py", "train", *tr], one,
              what="edgemeta meta-training throughput (main venv, torch 2.13.0 CPU)")
        if PY["easyfsl"].exists():
            r.run("train_easyfsl", "easyfsl", [bench + "easyfsl_peer.py", *tr], one,
                  what="easyfsl meta-training throughput")
            r.run("train_edgemeta_torch2141", "easyfsl", [bench + "edgemeta_side.py", "train", *tr],
                  {**one, "PYTHONPATH": "."}, what="edgemeta meta-training throughput with easyfsl's torch (same build)")
            r.run("train_easyfsl_channels_last", "easyfsl", [bench + "easyfsl_peer.py", *tr, "--channels-last"], one,
                  what="easyfsl with channels_last by hand (explains the margin; not the goal peer)")
    if not PY["ort"].exists():
        r.results["ort_backbone"] = r.results["ort_head"] = {"error": ".venvs/ort-training missing"}
    for key, runs in r.rounds.items():
        if len(runs) > 1:
            r.results[key] = merge_rounds(runs)
    # 8. learn2learn
    r.results["learn2learn"] = l2l_failure()

    meta = {
        "edgemeta_source": source_state(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": time.perf_counter() - t_start,
        "platform": platform.platform(), "python": platform.python_version(),
        "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_start": load_start, "load_end": loadavg(), "rounds": a.rounds,
        "versions": {
            ".venv (edgemeta, torch eager)": versions("main", ["torch", "onnxruntime", "onnx", "numpy"]),
            ".venvs/ort-training": versions("ort", ["onnxruntime-training-cpu", "onnx", "numpy", "torch"]),
            ".venvs/easyfsl": versions("easyfsl", ["easyfsl", "torch", "torchvision", "numpy"]),
        },
    }
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "results.json").write_text(json.dumps({"meta": meta, "results": r.results, "rounds": r.rounds,
                                                   "commands": r.commands, "log": LOG}, indent=1))
    write_report(r, meta, a.out)
    r.log(f"wrote {rel(a.out)} and {rel(WORK / 'results.json')} in {(time.perf_counter() - t_start) / 60:.1f} min")
    failed = [k for k, v in r.results.items() if isinstance(v, dict) and "error" in v]
    if failed:
        r.log(f"failed steps: {failed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
