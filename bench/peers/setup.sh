#!/usr/bin/env bash
# Install the peers (TorchServe 0.12, MLServer 1.7) into bench/.peers-venv, apart from the project venv.
# The project itself goes in without its dependencies (the peers pin their own grpcio/protobuf):
# the handlers only need rnn_sentiment.model, i.e. torch, safetensors and numpy (and onnxruntime
# with onnx for the ONNX handler, which builds our server's graph).
# torch is pinned to the local CPU build; an unpinned torch would pull a multi-GB CUDA one.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=bench/.peers-venv
STAMP=$VENV/.installed
REQUIREMENTS=(
    "torch==2.13.0"
    "torchserve==0.12.*" "torch-model-archiver==0.12.*" pyyaml   # the TorchServe worker needs pyyaml
    "mlserver==1.7.1" "uvloop<0.22"   # uvloop 0.22 breaks MLServer's parallel workers
    safetensors numpy
    # The TorchServe ONNX row's executor, at the project venv's versions: the same runtime as ours.
    "onnxruntime==1.32.0" "onnx==1.23.2"
)
if [ -f "$STAMP" ] && [ "$STAMP" -nt bench/peers/setup.sh ] && [ "$STAMP" -nt pyproject.toml ]; then
    exit 0
fi
command -v java >/dev/null 2>&1 || {
    echo "TorchServe needs Java 17 (Debian: apt-get install openjdk-17-jre-headless)" >&2
    exit 1
}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e .
"$VENV/bin/python" -c "import ts, mlserver, onnxruntime, rnn_sentiment.model.backends"
touch "$STAMP"
