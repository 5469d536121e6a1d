"""make bench-peers' TorchServe ONNX handler predicts what our server predicts on ONNX Runtime.

The handler runs in the peers' own environment (bench/.peers-venv, TorchServe's protobuf and
grpcio, not ours), built by bench/peers/setup.sh when missing or stale: about a minute and a half
of downloads the first time, so slow. It is called as TorchServe's worker calls it (a real
`ts.context.Context`, one batch of texts), and its answers are set against a real server of ours
started with `--backend onnxruntime`.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.harness import checkpoint_dir
from bench.peers.torchserve import HANDLER, MODEL_NAME
from rnn_sentiment.client import SentimentClient
from tests.support import REPO_ROOT, ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SETUP = REPO_ROOT / "bench" / "peers" / "setup.sh"
PEERS_PYTHON = REPO_ROOT / "bench" / ".peers-venv" / "bin" / "python"
LOCK = REPO_ROOT / "build" / "peers-venv.lock"  # build/ is git-ignored; the venv may not exist yet
TOLERANCE = 1e-5  # the agreement DESIGN.md asks of every executor
# Lengths from one word to a few dozen, unknown words among them, and more texts than one ONNX
# Runtime run takes (16), so the handler's batch is cut into several length runs as ours is.
TEXTS = [
    "great",
    "terrible",
    "a gripping, beautifully acted film",
    "the plot is dull and the jokes fall flat",
    "zxqv blorptastic snorfle",
    "not bad at all, actually rather good",
    "I wanted to like it, but by the second hour I had stopped caring about anyone on screen",
    "an instant classic",
    "the worst two hours I have spent in a cinema this year",
    "charming",
    "it is neither as funny nor as clever as it thinks it is, and the ending is a mess",
    "solid",
    "a warm, generous, funny film that earns every one of its tears",
    "boring",
    "the cast does what it can with a script that gives them almost nothing to do",
    "wonderful wonderful wonderful",
    "meh",
    "a bold and original vision, even when it stumbles it is never less than interesting to watch",
    "predictable",
    "one of the best films of the decade",
]

# Run inside the peers' venv: load the handler file as TorchServe does, initialise it, score TEXTS.
HANDLER_SCRIPT = """
import importlib.util, json, sys
from ts.context import Context
handler_path, model_dir, model_name = sys.argv[1:4]
spec = importlib.util.spec_from_file_location("torchserve_handler", handler_path)
handler = importlib.util.module_from_spec(spec)
spec.loader.exec_module(handler)
context = Context(model_name, model_dir, {}, 32, None, "0.12.0")
assert handler.handle(None, context) is None
texts = json.loads(sys.stdin.read())
answers = handler.handle([{"data": text.encode("utf-8")} for text in texts], context)
print(json.dumps({"executor": handler._predictor.description, "answers": [json.loads(a) for a in answers]}))
"""


def ensure_peers_venv() -> Path:
    """bench/.peers-venv's python, after setup.sh (a no-op while its stamp is fresh). A lock keeps
    two test runs on one machine from installing into it at once."""
    if shutil.which("java") is None:
        pytest.skip("the peers' venv cannot be built here: setup.sh refuses without Java 17, which TorchServe "
                    "needs (Debian: apt-get install openjdk-17-jre-headless)")
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(["bash", str(SETUP)], check=True, timeout=840, cwd=REPO_ROOT)
    return PEERS_PYTHON


def handler_answers(python: Path, model_dir: Path) -> dict:
    # A clean environment: nothing of ours on its path (PYTHONPATH, the project's venv).
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(BENCH_TORCH_THREADS="1", OMP_NUM_THREADS="1", BENCH_EXECUTOR="onnxruntime")
    done = subprocess.run([str(python), "-c", HANDLER_SCRIPT, str(HANDLER), str(model_dir), MODEL_NAME],
                          input=json.dumps(TEXTS), capture_output=True, text=True, timeout=300, env=env,
                          cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_onnx_handler_answers_as_our_server_does_on_onnx_runtime() -> None:
    python = ensure_peers_venv()
    model_dir = checkpoint_dir(None)
    handler = handler_answers(python, model_dir)
    assert handler["executor"].startswith("onnxruntime"), handler["executor"]

    server = ServerProcess(extra_args=["--backend", "onnxruntime", "--model-dir", str(model_dir.parent)]).start()
    try:
        with SentimentClient(server.target, timeout=60) as client:
            ours = client.predict(TEXTS, model=MODEL_NAME).predictions
    finally:
        assert server.stop() == 0, server.log()

    assert len(handler["answers"]) == len(ours) == len(TEXTS)
    for text, answer, prediction in zip(TEXTS, handler["answers"], ours, strict=True):
        probabilities = [float(p) for p in answer["probabilities"]]
        assert answer["label"] == prediction.label, text
        assert len(probabilities) == len(prediction.probabilities), text
        assert max(abs(a - b) for a, b in zip(probabilities, prediction.probabilities)) <= TOLERANCE, text
        assert abs(float(answer["score"]) - prediction.score) <= TOLERANCE, text
