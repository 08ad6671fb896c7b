#!/usr/bin/env bash
# One-command setup: `bash scripts/setup.sh`. Installs isoflop (editable) with its dev and hf extras.
#
# torch is handled first and on purpose: an unpinned `torch` from PyPI pulls several GB of CUDA packages.
#   - torch already importable (e.g. a CUDA build on a GPU machine): kept as it is.
#   - otherwise a GPU machine gets the default torch build, and a CPU machine the CPU build: a local wheel
#     when pip's find-links has one, else torch alone (--no-deps) from PyTorch's CPU wheel index and its
#     dependencies from pip's own index.
set -euo pipefail
PY=${PYTHON:-python3}
TORCH_VERSION=${ISOFLOP_TORCH_VERSION:-2.13.0}

if "$PY" -c "import torch" 2>/dev/null; then
  echo "setup: keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  "$PY" -m pip install "torch==${TORCH_VERSION}"
elif "$PY" -m pip install --no-index --no-deps "torch==${TORCH_VERSION}" 2>/dev/null; then
  "$PY" -m pip install "torch==${TORCH_VERSION}"   # its dependencies; torch itself is already satisfied
else
  "$PY" -m pip install --no-deps "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu
  "$PY" -m pip install "torch==${TORCH_VERSION}"   # its dependencies; torch itself is already satisfied
fi

"$PY" -m pip install -e ".[dev,hf]"
