#!/usr/bin/env bash
# Create the peer virtual environments used by tools/bench/report.py, from nothing.
#
#   bash tools/bench/setup_peer_venvs.sh            # all peers
#   bash tools/bench/setup_peer_venvs.sh ort easyfsl  # some of them
#
# Each peer gets its own venv under .venvs/ (gitignored) because their packages conflict with the
# main venv (.venv: torch 2.13.0 CPU + onnxruntime 1.32):
#   .venvs/ort-training   onnxruntime-training-cpu 1.19.2 (the last release; it ships its own
#                         onnxruntime 1.19.2) + onnx 1.16.2 (its era: writes IR <= 10, which ORT 1.19 loads)
#                         + numpy < 2 (what onnx 1.16 was built against) + torch 2.13.0 CPU, only because
#                         `onnxruntime.training`'s __init__ imports torch (generate_artifacts needs it); the
#                         device-side measurement imports `onnxruntime.training.api` alone, without torch.
#   .venvs/easyfsl        easyfsl 1.5.0. First tried as torch 2.13.0 (the CPU wheel on this disk) +
#                         `pip install --no-deps easyfsl`: `from easyfsl.methods import PrototypicalNetworks`
#                         then fails (easyfsl.methods -> easyfsl.modules.resnet imports torchvision), so the
#                         script falls back to torch 2.14.1 + torchvision 0.29.1 (a ~5.5 GB CUDA build,
#                         run on the CPU), the pair pip takes from this disk.
#   .venvs/learn2learn    a throwaway attempt: `pip install learn2learn`; its log and exit code are kept
#                         (.venvs/learn2learn-install.{log,rc}) for BENCHMARKS.md, the venv is removed
#                         (on Python 3.11 here the sdist fails to build).
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
WANT=${*:-ort easyfsl learn2learn}
mkdir -p .venvs

want() { [[ " $WANT " == *" $1 "* ]]; }

if want ort; then
  echo "== .venvs/ort-training"
  rm -rf .venvs/ort-training
  $PY -m venv .venvs/ort-training
  # onnxruntime.training's __init__ imports torch (its optim/amp helpers), so torch is needed to import
  # the training API at all: the CPU wheel on this disk, installed first so nothing pulls a CUDA build.
  .venvs/ort-training/bin/pip install -q "torch==2.13.0" || exit 1
  .venvs/ort-training/bin/pip install -q "onnxruntime-training-cpu==1.19.2" "onnx==1.16.2" "numpy<2" || exit 1
  .venvs/ort-training/bin/python -c "import onnxruntime, onnx; from onnxruntime.training import artifacts, api; print('onnxruntime', onnxruntime.__version__, 'onnx', onnx.__version__)" || exit 1
fi

if want easyfsl; then
  echo "== .venvs/easyfsl"
  rm -rf .venvs/easyfsl
  $PY -m venv .venvs/easyfsl
  .venvs/easyfsl/bin/pip install -q "torch==2.13.0" "numpy" "tqdm" "pandas" || exit 1
  .venvs/easyfsl/bin/pip install -q --no-deps "easyfsl==1.5.0" || exit 1
  .venvs/easyfsl/bin/python -c "import torch, easyfsl; from easyfsl.methods import PrototypicalNetworks; print('torch', torch.__version__, 'easyfsl ok')" || {
    echo "easyfsl does not import without torchvision; falling back to torch 2.14.1 + torchvision 0.29.1 (CUDA build, ~5.5 GB)"
    .venvs/easyfsl/bin/pip install -q "torch==2.14.1" "torchvision==0.29.1" || exit 1
    .venvs/easyfsl/bin/python -c "import easyfsl; from easyfsl.methods import PrototypicalNetworks" || exit 1
  }
fi

if want learn2learn; then
  echo "== .venvs/learn2learn (expected to fail on Python 3.11; the error is recorded)"
  rm -rf .venvs/learn2learn
  $PY -m venv .venvs/learn2learn
  .venvs/learn2learn/bin/pip install -q "torch==2.13.0" > .venvs/learn2learn-install.log 2>&1
  if .venvs/learn2learn/bin/pip install learn2learn >> .venvs/learn2learn-install.log 2>&1; then
    echo "learn2learn installed" | tee -a .venvs/learn2learn-install.log
    echo 0 > .venvs/learn2learn-install.rc
  else
    echo $? > .venvs/learn2learn-install.rc
    echo "learn2learn install failed (log: .venvs/learn2learn-install.log)"
    grep -m3 -E "fatal error|error:" .venvs/learn2learn-install.log || true
  fi
  rm -rf .venvs/learn2learn          # throwaway: only the log and exit code are kept
fi
echo "done: $WANT"
