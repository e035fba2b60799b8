"""Browser costs of the page (``examples/web``) in Debian's headless Chromium, against Node in the same run.

    python tools/web_bench.py [--rounds 3] [--repeats 30] [--threads 1 2] [--json]

For each onnxruntime-web thread count (``?threads=N``; 2 = SIMD + threads, needs the server's
cross-origin isolation), in a fresh profile (cold HTTP cache) and again on a reload (warm cache):
- ``ready``: ms from navigation until the runtime, onnxruntime-web and the bundle are loaded and verified;
- ``first prediction``: ms from navigation until a first answer: ready, then fit 5 classes x 1
  sample and predict 1 image (the same synthetic 105x105 images as examples/node/bench.js);
- steady state (median of ``--repeats`` after 10 warm-up runs): adapt 5-way 5-shot from pixels
  (fit on 25 raw images: preprocess + embed + adapt), predict 1 image, embed per image in a batch of 75;
- bytes downloaded (response bodies as sent, from the request log), by part: page, runtime JS,
  onnxruntime-web (JS + wasm), bundle.
Node: ``node examples/node/bench.js --json`` (onnxruntime-node, 1 thread) in the same run, for the
adapt 5w5s ratio. CPU time as well, since a shared machine's load inflates wall time: the browser's
renderer process (DevTools ``Performance.getMetrics`` ProcessTime, thread ticks) and Node's
``process.cpuUsage()`` around the same fits (a few lines run with examples/node's packages). The browser runs and Node alternate for ``--rounds`` rounds (a fresh browser each
time); each figure is the median over rounds, and the ratio is given per round, since a shared
machine's load moves every figure between rounds. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import web_harness

REPO = web_harness.REPO
NODE_BENCH = REPO / "examples" / "node" / "bench.js"

# The in-page benchmark: the same synthetic images as examples/node/bench.js (strokes on a pattern).
PAGE_SETUP = """
  const image = (k) => { const data = new Uint8Array(105 * 105);
    for (let r = 0; r < 105; r++) for (let c = 0; c < 105; c++) data[r * 105 + c] = (r * 7 + c * 13 + k * 17) % 23 < 3 ? 255 : 0;
    return { data, height: 105, width: 105 }; };
  const range = (n, f) => Array.from({ length: n }, (_, k) => f(k));
"""
FIRST_PREDICTION = "async () => {" + PAGE_SETUP + """
  while (!(window.__edgemeta && (window.__edgemeta.ready || window.__edgemeta.error))) await new Promise((r) => setTimeout(r, 2));
  if (window.__edgemeta.error) throw new Error(window.__edgemeta.error);
  const clf = window.__edgemeta.clf;
  await clf.fit(range(5, image), range(5, (k) => `class${k}`));
  const [label] = await clf.predict([image(100)]);
  const t = window.__edgemeta.timings;
  return { ready: t.bundle, runtime: t.runtime, first_prediction: performance.now(), label,
           isolated: crossOriginIsolated, threads: window.__edgemeta.threads };
}"""
STEADY = "async (repeats) => {" + PAGE_SETUP + """
  const clf = window.__edgemeta.clf;
  const timeit = async (fn) => { for (let i = 0; i < 10; i++) await fn();
    const ms = []; for (let i = 0; i < repeats; i++) { const t0 = performance.now(); await fn(); ms.push(performance.now() - t0); }
    ms.sort((a, b) => a - b); const q = (p) => ms[Math.min(ms.length - 1, Math.floor(p * ms.length))];
    return { median_ms: q(0.5), p10_ms: q(0.1), p90_ms: q(0.9), repeats }; };
  const support = range(25, image), labels = range(25, (k) => `class${Math.floor(k / 5)}`);
  const one = [image(100)], batch = range(75, (k) => image(200 + k));
  await clf.fit(support, labels);
  const res = { adapt_5w5s: await timeit(() => clf.fit(support, labels)), predict_1: await timeit(() => clf.predict(one)),
                embed_batch75: await timeit(() => clf.embed(batch)), precision: clf.bundle.precision };
  res.embed_per_image_ms = res.embed_batch75.median_ms / 75;
  return res;
}"""


FITS = "async (n) => {" + PAGE_SETUP + """
  const clf = window.__edgemeta.clf;
  const support = range(25, image), labels = range(25, (k) => `class${Math.floor(k / 5)}`);
  const t0 = performance.now(); for (let i = 0; i < n; i++) await clf.fit(support, labels);
  return (performance.now() - t0) / n;
}"""
NODE_CPU = """import * as ort from 'onnxruntime-node';
import { FewShotClassifier } from 'edgemeta-js';
import { sourceFromPath } from 'edgemeta-js/node';
const [bundle, n] = [process.argv[1], Number(process.argv[2])];
""" + PAGE_SETUP + """
const clf = await FewShotClassifier.load(ort, sourceFromPath(bundle), { threads: 1 });
const support = range(25, image), labels = range(25, (k) => `class${Math.floor(k / 5)}`);
for (let i = 0; i < 10; i++) await clf.fit(support, labels);
const c0 = process.cpuUsage(), t0 = performance.now();
for (let i = 0; i < n; i++) await clf.fit(support, labels);
const c = process.cpuUsage(c0);
console.log(JSON.stringify({ cpu_ms: (c.user + c.system) / 1000 / n, wall_ms: (performance.now() - t0) / n }));
"""


def adapt_cpu(context: Any, page: Any, n: int) -> dict[str, float]:
    """CPU ms per 5w5s fit in the page: the renderer process and its main thread (thread ticks)."""
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable", {"timeDomain": "threadTicks"})

    def metrics() -> dict[str, float]:
        return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}

    page.evaluate(FITS, 5)
    before = metrics()
    wall = page.evaluate(FITS, n)
    after = metrics()
    return {"process_cpu_ms": (after["ProcessTime"] - before["ProcessTime"]) * 1000 / n,
            "main_thread_cpu_ms": (after["ThreadTime"] - before["ThreadTime"]) * 1000 / n, "wall_ms": wall}


def part_of(url: str) -> str:
    """Which part of the page weight a URL is."""
    if "/onnxruntime-web/" in url:
        return "onnxruntime-web wasm" if url.endswith(".wasm") else "onnxruntime-web js"
    if "/js/src/" in url:
        return "runtime js (js/src)"
    if "/models/" in url:
        return "bundle"
    return "page (html, css, js, json)"


def browser_run(pw: Any, origin: str, threads: int, repeats: int) -> dict[str, Any]:
    """Cold and warm first prediction, steady-state costs and bytes for one thread count."""
    profile = Path(tempfile.mkdtemp(prefix="edgemeta-web-bench-"))
    context = web_harness.launch(pw, profile)
    sizes: dict[str, int] = {}
    context.on("requestfinished", lambda r: sizes.__setitem__(r.url, sizes.get(r.url, 0) + r.sizes()["responseBodySize"]))
    page = context.pages[0] if context.pages else context.new_page()
    url = f"{origin}/examples/web/?threads={threads}"
    try:
        page.goto(url, wait_until="commit")
        cold = page.evaluate(FIRST_PREDICTION)
        weight: dict[str, int] = {}
        for u, n in sizes.items():
            weight[part_of(u)] = weight.get(part_of(u), 0) + n
        outside = sorted(u for u in sizes if not u.startswith(origin))
        page.goto(url, wait_until="commit")
        warm = page.evaluate(FIRST_PREDICTION)
        steady = page.evaluate(STEADY, repeats)
        steady["adapt_5w5s_cpu"] = adapt_cpu(context, page, repeats)
    finally:
        context.close()
        shutil.rmtree(profile, ignore_errors=True)
    return {"threads": threads, "cold": cold, "warm": warm, "steady": steady, "bytes": weight,
            "bytes_total": sum(weight.values()), "outside_requests": outside}


def node_run(repeats: int) -> dict[str, Any] | None:
    """examples/node/bench.js --json, or None where Node or its packages are missing."""
    node = shutil.which("node")
    if node is None or not (NODE_BENCH.parent / "node_modules").is_dir():
        return None
    out = subprocess.run([node, str(NODE_BENCH), "--json", "--repeats", str(repeats)], cwd=NODE_BENCH.parent,
                         capture_output=True, text=True, timeout=600, check=True).stdout
    result = json.loads(out)
    cpu = subprocess.run([node, "--input-type=module", "-e", NODE_CPU, str(REPO / "models" / "omniglot-conv4-proto"),
                          str(repeats)], cwd=NODE_BENCH.parent, capture_output=True, text=True, timeout=600, check=True)
    result["adapt_5w5s_cpu"] = json.loads(cpu.stdout)
    return result


def _median(rounds: list[dict[str, Any]], *path: str) -> float:
    """The median over rounds of the figure at ``path`` (keys into each round's result)."""
    values = []
    for r in rounds:
        for k in path:
            r = r[k]
        values.append(r)
    return statistics.median(values)


def report(rounds: list[dict[str, Any]], chromium: str) -> None:
    """Print medians over rounds (one round: {"browser": [one run per thread count], "node": ...})."""
    first = rounds[0]["browser"]
    node = [r["node"] for r in rounds if r["node"]]
    print(f"{chromium}, headless; onnxruntime-web wasm from this origin; bundle models/omniglot-conv4-proto "
          f"({first[0]['steady']['precision']} backbone); medians over {len(rounds)} round(s)")
    for i, run in enumerate(first):
        runs = [r["browser"][i] for r in rounds]

        def med(*path: str, runs: list[dict[str, Any]] = runs) -> float:
            return _median(runs, *path)

        print(f"\nthreads={run['threads']} (cross-origin isolated: {run['cold']['isolated']})")
        print(f"  first prediction after navigation: cold cache {med('cold', 'first_prediction'):.0f} ms "
              f"(ready at {med('cold', 'ready'):.0f} ms), warm reload {med('warm', 'first_prediction'):.0f} ms "
              f"(ready at {med('warm', 'ready'):.0f} ms)")
        print(f"  adapt 5-way 5-shot from pixels: median {med('steady', 'adapt_5w5s', 'median_ms'):.2f} ms")
        print(f"  predict 1 image: median {med('steady', 'predict_1', 'median_ms'):.2f} ms; "
              f"embed in a batch of 75: {med('steady', 'embed_per_image_ms'):.3f} ms per image")
        if node:
            ratios = [r["browser"][i]["steady"]["adapt_5w5s"]["median_ms"] / r["node"]["adapt_5w5s"]["median_ms"]
                      for r in rounds if r["node"]]
            print(f"  adapt 5w5s browser / Node: {statistics.median(ratios):.2f}x "
                  f"(rounds: {', '.join(f'{x:.2f}x' for x in ratios)})")
            cpu = [r["browser"][i]["steady"]["adapt_5w5s_cpu"]["process_cpu_ms"] / r["node"]["adapt_5w5s_cpu"]["cpu_ms"]
                   for r in rounds if r["node"]]
            print(f"  adapt 5w5s CPU time: renderer process {med('steady', 'adapt_5w5s_cpu', 'process_cpu_ms'):.2f} ms "
                  f"(main thread {med('steady', 'adapt_5w5s_cpu', 'main_thread_cpu_ms'):.2f} ms); browser / Node "
                  f"{statistics.median(cpu):.2f}x (rounds: {', '.join(f'{x:.2f}x' for x in cpu)})")
        print(f"  downloaded {run['bytes_total'] / 1e6:.2f} MB: " +
              ", ".join(f"{k} {v / 1e6:.3f} MB" for k, v in sorted(run["bytes"].items(), key=lambda kv: -kv[1])))
        outside = sorted({u for r in runs for u in r["outside_requests"]})
        if outside:
            print(f"  REQUESTS TO OTHER ORIGINS: {outside}")
    if node:
        print(f"\nNode ({node[0]['runtime']}, 1 thread): adapt 5w5s median {_median(node, 'adapt_5w5s', 'median_ms'):.2f} ms, "
              f"predict 1 image {_median(node, 'predict_1', 'median_ms'):.2f} ms, "
              f"{_median(node, 'predict_batch75_per_image_ms'):.3f} ms per image in a batch of 75; "
              f"adapt 5w5s CPU time {_median(node, 'adapt_5w5s_cpu', 'cpu_ms'):.2f} ms")
    else:
        print("\nNode: not measured (node or examples/node/node_modules missing)")
    print(f"load average: {rounds[0]['load']} at the start, {rounds[-1]['load']} after the last round")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="alternating browser / Node rounds")
    ap.add_argument("--repeats", type=int, default=30, help="timed calls per steady-state figure")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    args = ap.parse_args(argv)
    why = web_harness.missing()
    if why:
        raise SystemExit(f"error: {why}")
    from playwright.sync_api import sync_playwright

    rounds = []
    proc, origin = web_harness.start_server()
    try:
        with sync_playwright() as pw:
            for _ in range(args.rounds):
                load = [round(x, 2) for x in os.getloadavg()]
                browser = [browser_run(pw, origin, t, args.repeats) for t in args.threads]
                rounds.append({"load": load, "browser": browser, "node": node_run(args.repeats)})
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    chromium = subprocess.run([str(web_harness.CHROMIUM), "--version"], capture_output=True, text=True,
                              check=True).stdout.strip()
    if args.json:
        print(json.dumps({"chromium": chromium, "rounds": rounds}, indent=2))
    else:
        report(rounds, chromium)


if __name__ == "__main__":
    main()
