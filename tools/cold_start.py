"""Where a device process's cold start goes: import, load + verify, first answer; and which imports cost.

Each run is a fresh Python process that imports ``edgemeta.runtime``, loads and verifies a bundle,
fits 5 random classes and predicts one image (what ``edgemeta bench`` calls cold start). Every
phase is reported as wall time and as the process's own CPU time (on a busy machine the wall time
includes waiting for a core; the CPU time is close to what an idle machine's wall time would be).
Then ``python -X importtime`` of the runtime import, repeated, gives each module's own import time
(median), grouped by top-level package, with the chain of importers that pulled in the costly ones.

Each side's ``edgemeta`` package is measured from a copy in a temporary folder without any
``__pycache__`` (put first on ``PYTHONPATH``): "compiled from source" then really compiles every
edgemeta module in every process, whatever bytecode the checkout's own ``__pycache__`` folders hold
(the standard library, numpy and onnxruntime keep their installed bytecode, as on a device), and
"bytecode cached" reads all bytecode from a per-side ``PYTHONPYCACHEPREFIX`` filled by one first run.

``--against REF`` measures the ``edgemeta`` package of git revision ``REF`` (extracted with
``git archive``; or a folder holding an ``edgemeta/`` package) side by side with this checkout's
working tree, runs interleaved, on the same bundle:

    python tools/cold_start.py models/omniglot-conv4-proto --runs 21 --against HEAD~3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import shutil
import tarfile
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
c0, t0 = time.process_time(), time.perf_counter()
import numpy as np
from edgemeta.runtime import FewShotClassifier
c1, t1 = time.process_time(), time.perf_counter()
clf = FewShotClassifier(sys.argv[1], threads=1, precision=sys.argv[2])
c2, t2 = time.process_time(), time.perf_counter()
size = [int(v) for v in clf.bundle.manifest["preprocess"]["size"]]
shape = size if clf.bundle.channels == 1 else [*size, 3]
def make(n, offset=0):   # fixed pseudo-random pixels without numpy.random (its import is not the runtime's)
    v = (np.arange(offset, offset + n * int(np.prod(shape)), dtype=np.uint64) * 2654435761) % 251
    return (v.astype(np.float32) / 250).reshape(n, *shape) if clf.bundle.channels == 1 else v.astype(np.uint8).reshape(n, *shape)
clf.fit(make(5), list(range(5)))
clf.predict(make(1, 7))
c3, t3 = time.process_time(), time.perf_counter()
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
import edgemeta
print(json.dumps({"import": [(t1 - t0) * 1e3, (c1 - c0) * 1e3], "load": [(t2 - t1) * 1e3, (c2 - c1) * 1e3],
                  "first_answer": [(t3 - t2) * 1e3, (c3 - c2) * 1e3], "total": [(t3 - t0) * 1e3, (c3 - c0) * 1e3],
                  "peak_rss_mb": peak, "package": edgemeta.__file__, "modules": sorted(sys.modules)}))
"""

IMPORT_ONLY = "from edgemeta.runtime import FewShotClassifier"
PHASES = ("import", "load", "first_answer", "total")


def _env(pythonpath: str | None, pycache: str | None = None) -> dict[str, str]:
    """The child's environment: ``pycache`` set, bytecode is written to and read from that folder (an
    installed package's case); unset, nothing is written (``edgemeta bench``'s setting: a checkout
    without ``__pycache__`` compiles every module from source in every process)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPYCACHEPREFIX", None)
    if pycache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    return env


def one_run(bundle: str, precision: str, pythonpath: str | None, pycache: str | None) -> dict:
    """One fresh process: phases as ``[wall_ms, cpu_ms]``, peak RSS, the package it imported, its modules."""
    p = subprocess.run([sys.executable, "-c", CHILD, bundle, precision], capture_output=True, text=True,
                       env=_env(pythonpath, pycache), cwd=pythonpath or str(ROOT))
    if p.returncode != 0:
        raise SystemExit(f"cold-start process failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def import_times(pythonpath: str | None, pycache: str | None) -> dict[str, tuple[int, int, list[str]]]:
    """``python -X importtime`` of the runtime import: module -> (self us, cumulative us, importer chain)."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-c", IMPORT_ONLY], capture_output=True, text=True,
                       env=_env(pythonpath, pycache), cwd=pythonpath or str(ROOT))
    rows = []
    for line in p.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = line[len("import time:"):].split("|", 2)
        rows.append(((len(name) - len(name.lstrip())) // 2, name.strip(), int(self_us), int(cum_us)))
    out = {}
    for i, (depth, name, self_us, cum_us) in enumerate(rows):
        chain, d = [], depth
        for later in rows[i + 1:]:               # importtime prints children before their importer
            if later[0] < d:
                chain.append(later[1])
                d = later[0]
        out[name] = (self_us, cum_us, chain)
    return out


def median_imports(pythonpath: str | None, pycache: str | None, runs: int) -> dict[str, tuple[float, float, list[str]]]:
    samples = [import_times(pythonpath, pycache) for _ in range(runs)]
    names = set().union(*samples)
    return {n: (statistics.median(s[n][0] for s in samples if n in s) / 1e3,
                statistics.median(s[n][1] for s in samples if n in s) / 1e3,
                next(s[n][2] for s in samples if n in s)) for n in names}


def by_package(imports: dict[str, tuple[float, float, list[str]]]) -> dict[str, float]:
    """Own import time (ms) summed per top-level package; edgemeta per module."""
    out: dict[str, float] = defaultdict(float)
    for name, (self_ms, _, _) in imports.items():
        out[name if name.startswith("edgemeta") else name.split(".")[0]] += self_ms
    return dict(out)


def extract_revision(ref: str, into: Path) -> str:
    """The ``edgemeta`` package of git revision ``ref``, unpacked under ``into``; returns that folder."""
    into.mkdir(parents=True, exist_ok=True)
    tar = into / "src.tar"
    with open(tar, "wb") as fh:
        subprocess.run(["git", "-C", str(ROOT), "archive", ref, "edgemeta"], stdout=fh, check=True)
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")
    return str(into)


def copy_package(package: Path, into: Path) -> str:
    """A copy of the ``edgemeta`` package folder ``package`` under ``into``, without bytecode; returns ``into``."""
    shutil.copytree(package, into / "edgemeta", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return str(into)


def summarise(runs: list[dict]) -> dict:
    res = {ph: [statistics.median(r[ph][0] for r in runs), statistics.median(r[ph][1] for r in runs)]
           for ph in PHASES}
    res["peak_rss_mb"] = statistics.median(r["peak_rss_mb"] for r in runs)
    res["modules"] = len(runs[0]["modules"])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--runs", type=int, default=15, help="fresh processes per side (medians)")
    ap.add_argument("--import-runs", type=int, default=7, help="-X importtime runs per side (medians)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--against", metavar="REF", help="git revision (or a folder holding an edgemeta/ package) to "
                                                     "measure side by side with this checkout")
    ap.add_argument("--top", type=int, default=18, help="rows of the import tables")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    a = ap.parse_args()
    bundle = str(Path(a.bundle).resolve())
    modes = {"bytecode cached": "cached", "compiled from source": None}
    with tempfile.TemporaryDirectory(prefix="edgemeta-cold-") as tmp:
        sides: dict[str, str | None] = {"this checkout": copy_package(ROOT / "edgemeta", Path(tmp) / "work")}
        if a.against:
            folder = Path(a.against)
            ref = Path(tmp) / "ref"
            base = (copy_package(folder / "edgemeta", ref) if (folder / "edgemeta").is_dir()
                    else extract_revision(a.against, ref))
            sides = {f"{a.against}": base, **sides}
        caches = {s: str(Path(tmp) / f"pyc{i}") for i, s in enumerate(sides)}
        cols = [(s, m) for m in modes for s in sides]

        def pyc(side: str, mode: str) -> str | None:
            return caches[side] if modes[mode] else None

        for side in sides:                         # compile once into each side's bytecode cache
            one_run(bundle, a.precision, sides[side], caches[side])
        runs: dict[tuple[str, str], list[dict]] = {c: [] for c in cols}
        for _ in range(a.runs):                   # interleaved, so load changes hit every column alike
            for side, mode in cols:
                runs[(side, mode)].append(one_run(bundle, a.precision, sides[side], pyc(side, mode)))
        for side, path in sides.items():
            where = str(Path(runs[(side, "bytecode cached")][0]["package"]).parent)
            expected = str(Path(path) / "edgemeta")
            if where != expected:
                raise SystemExit(f"{side}: the child imported edgemeta from {where}, expected {expected}")
        imports = {s: median_imports(p, caches[s], a.import_runs) for s, p in sides.items()}
        summary = {c: summarise(r) for c, r in runs.items()}
        only = {}
        if a.against:
            old, new = (set(runs[(s, "bytecode cached")][0]["modules"]) for s in sides)
            only = {"dropped": sorted(old - new), "added": sorted(new - old)}
    if a.json:
        print(json.dumps({"bundle": a.bundle, "runs": a.runs, "modules_changed": only,
                          "summary": {f"{s} | {m}": v for (s, m), v in summary.items()},
                          "packages_ms": {s: by_package(i) for s, i in imports.items()}}, indent=1))
        return
    print(f"cold start of {a.bundle} (precision {a.precision}): medians of {a.runs} fresh processes per column, "
          f"wall / CPU ms (CPU: the process's own time, what an idle machine's wall time would be)")
    for mode in modes:
        names = list(sides)
        print(f"\n{mode}:")
        print(f"  {'phase':14s}" + "".join(f"{n:>26s}" for n in names))
        for ph in PHASES:
            print(f"  {ph:14s}" + "".join(f"{summary[(n, mode)][ph][0]:>15.1f} / {summary[(n, mode)][ph][1]:6.1f}"
                                          for n in names))
        print(f"  {'peak RSS MB':14s}" + "".join(f"{summary[(n, mode)]['peak_rss_mb']:>26.1f}" for n in names))
        print(f"  {'modules':14s}" + "".join(f"{summary[(n, mode)]['modules']:>26d}" for n in names))
    names = list(sides)
    pk = {n: by_package(imports[n]) for n in names}
    keys = sorted(set().union(*pk.values()), key=lambda k: -max(p.get(k, 0.0) for p in pk.values()))
    print(f"\nown import time by package (edgemeta by module), -X importtime (wall), bytecode cached, "
          f"median of {a.import_runs} runs, ms")
    print(f"  {'':42s}" + "".join(f"{n[-12:]:>14s}" for n in names))
    for k in keys[: a.top]:
        print(f"  {k:42s}" + "".join(f"{pk[n].get(k, 0.0):>14.1f}" for n in names))
    print(f"  {'total':42s}" + "".join(f"{sum(pk[n].values()):>14.1f}" for n in names))
    last = names[-1]
    print(f"\ncostliest imports ({last}): cumulative ms, imported by")
    for name, (_, cum, chain) in sorted(imports[last].items(), key=lambda kv: -kv[1][1])[: a.top]:
        print(f"  {cum:8.1f}  {name:38s} <- {' <- '.join(chain[:4])}")
    if only:
        print(f"\nmodules no longer imported ({len(only['dropped'])}): {', '.join(only['dropped']) or '-'}")
        print(f"modules newly imported ({len(only['added'])}): {', '.join(only['added']) or '-'}")

if __name__ == "__main__":
    main()
