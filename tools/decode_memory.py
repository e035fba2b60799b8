"""Peak memory of decoding one phone-sized JPEG: full size vs the draft decode a bundle asks for.

Each decode runs in its own process; the figure is the peak RSS (``VmHWM``) above the peak the
process had after importing numpy, Pillow and the decoder. The photo is a real mini-ImageNet sample
upscaled to the size given (default 4032x3024, 12 megapixels), or a synthetic picture if the sample
is absent.

    OMP_NUM_THREADS=1 python tools/decode_memory.py [--width 4032 --height 3024 --target 84]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "mini-imagenet" / "sample"

# VmHWM (this process's own peak); ru_maxrss would keep the peak of a large parent across fork + exec
CHILD = """
import json, resource, sys, time
from edgemeta.contract.image_files import decode_image

def peak_kb():
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

path, target = sys.argv[1], json.loads(sys.argv[2])
base = peak_kb()
start = time.perf_counter()
x = decode_image(path, tuple(target) if target else None, 3)
seconds = time.perf_counter() - start
peak = peak_kb()
print(json.dumps({"shape": list(x.shape), "peak_mb": (peak - base) / 1024, "base_mb": base / 1024,
                  "seconds": seconds}))
"""


def make_jpeg(path: Path, width: int, height: int) -> str:
    """Write the test JPEG; returns where its picture came from."""
    from PIL import Image

    files = sorted((SAMPLE / "test").glob("*/*.jpg")) if SAMPLE.is_dir() else []
    if files:
        with Image.open(files[0]) as im:
            im.convert("RGB").resize((width, height), Image.Resampling.BILINEAR).save(path, "JPEG", quality=90)
        return f"{files[0].name} upscaled"
    yy, xx = np.mgrid[:height, :width]
    rgb = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], -1).astype(np.uint8)
    Image.fromarray(rgb).save(path, "JPEG", quality=90)
    return "synthetic gradient"


def measure(path: Path, target: tuple[int, int] | None) -> dict:
    """Decode ``path`` in a fresh process; its output shape, peak MB above baseline and seconds."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), json.dumps(target)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=4032)
    ap.add_argument("--height", type=int, default=3024)
    ap.add_argument("--target", type=int, default=84, help="the bundle's (square) input size")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photo.jpg"
        source = make_jpeg(path, args.width, args.height)
        print(f"{args.width}x{args.height} JPEG ({path.stat().st_size / 1e6:.1f} MB on disk, {source})")
        for label, target in (("full decode", None), (f"draft for {args.target}x{args.target}",
                                                      (args.target, args.target))):
            r = measure(path, target)
            print(f"  {label:18s} -> {r['shape'][0]}x{r['shape'][1]}x{r['shape'][2]}: "
                  f"peak RSS +{r['peak_mb']:.1f} MB over {r['base_mb']:.0f} MB after imports, "
                  f"{r['seconds'] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
