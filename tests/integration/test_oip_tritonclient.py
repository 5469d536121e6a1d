"""The real tritonclient (PyPI `tritonclient[grpc]`) against a live server: the example a Triton
user would write (examples/oip/classify.py), then metadata, readiness, a bad input and an unknown
model, and our proto's fields against tritonclient's own copy of the protocol.

tritonclient needs protobuf < 7 and this project runs 7, so it gets a virtual environment of its
own, built from examples/oip/requirements.txt by this module and cached under build/ (rebuilt when
that file changes). Building it downloads its wheels once, which takes a minute or two: slow.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rnn_sentiment.inference import grpc_service_pb2 as oip
from tests.support import REPO_ROOT, ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REQUIREMENTS = REPO_ROOT / "examples" / "oip" / "requirements.txt"
EXAMPLE = REPO_ROOT / "examples" / "oip" / "classify.py"
VENV = REPO_ROOT / "build" / "oip-tritonclient-venv"
VENV_PYTHON = VENV / "bin" / "python"
STAMP = VENV / "requirements.sha256"  # written last: a venv without it is incomplete and rebuilt
MODEL = "sst2-gru"


def requirements_key() -> str:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return hashlib.sha256(REQUIREMENTS.read_bytes() + version.encode()).hexdigest()


def ensure_tritonclient_venv() -> Path:
    """The cached tritonclient environment, built first if missing or stale. A lock keeps two
    test runs on one machine from building it at once."""
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / "oip-tritonclient-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        key = requirements_key()
        if STAMP.exists() and STAMP.read_text() == key and VENV_PYTHON.exists():
            return VENV_PYTHON
        shutil.rmtree(VENV, ignore_errors=True)
        # The base interpreter, not ours: a venv made from inside .venv would still be separate,
        # but this says plainly that nothing of the project's environment is shared.
        base_python = Path(getattr(sys, "_base_executable", sys.executable))
        subprocess.run([str(base_python), "-m", "venv", str(VENV)], check=True, timeout=300)
        subprocess.run([str(VENV_PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "-r", str(REQUIREMENTS)], check=True, timeout=900)
        STAMP.write_text(key)
        return VENV_PYTHON


@pytest.fixture(scope="module")
def tritonclient_python() -> Path:
    return ensure_tritonclient_venv()


def run_in_venv(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # A clean environment: nothing of ours on its path (PYTHONPATH, the project's venv).
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=120, env=env,
                          cwd=REPO_ROOT)


def test_the_triton_users_example_runs(tritonclient_python: Path, server: ServerProcess) -> None:
    result = run_in_venv(tritonclient_python, str(EXAMPLE), "--url", server.target, "--model", MODEL,
                         "a warm, funny and beautifully acted film", "a dull , lifeless and painfully boring movie")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"server live: True ready: True {MODEL} ready: True"
    assert lines[1].startswith(f"model {MODEL} versions [") and "platform pytorch" in lines[1]
    assert lines[2].startswith("positive ") and lines[3].startswith("negative "), result.stdout


CHECKS = r"""
import json, sys
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

target, model = sys.argv[1], sys.argv[2]
client = grpcclient.InferenceServerClient(url=target)
report = {}

def text_input(values):
    tensor = grpcclient.InferInput("text", [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array(values, dtype=np.object_))
    return tensor

def status_of(call):
    try:
        call()
    except InferenceServerException as error:
        return error.status()
    return "OK"

# Outputs asked in the reverse order still come back by name: tritonclient pairs them by position.
result = client.infer(model, [text_input([b"a gorgeous film", b"a boring film", b"fine"])],
                      outputs=[grpcclient.InferRequestedOutput("probabilities"),
                               grpcclient.InferRequestedOutput("label")])
report["labels"] = [label.decode() for label in result.as_numpy("label")]
report["probabilities_shape"] = list(result.as_numpy("probabilities").shape)
report["probabilities_dtype"] = str(result.as_numpy("probabilities").dtype)
report["row_sums"] = [round(float(s), 4) for s in result.as_numpy("probabilities").sum(axis=1)]
metadata = client.get_model_metadata(model, as_json=True)
report["metadata"] = {key: metadata[key] for key in ("name", "platform", "inputs", "outputs")}
report["model_ready"] = client.is_model_ready(model)
report["unknown_model_ready"] = client.is_model_ready("no-such-model")
report["server_ready"] = client.is_server_ready()
report["blank_text"] = status_of(lambda: client.infer(model, [text_input([b"good", b"   "])]))
wrong_type = grpcclient.InferInput("text", [1], "FP32")
wrong_type.set_data_from_numpy(np.array([1.0], dtype=np.float32))
report["wrong_datatype"] = status_of(lambda: client.infer(model, [wrong_type]))
report["unknown_model_infer"] = status_of(lambda: client.infer("no-such-model", [text_input([b"good"])]))
report["unknown_model_metadata"] = status_of(lambda: client.get_model_metadata("no-such-model"))
report["still_serving"] = client.infer(model, [text_input([b"good"])]).as_numpy("label").tolist() == [b"positive"]
print(json.dumps(report))
"""


def test_tritonclient_metadata_readiness_and_errors(tritonclient_python: Path, server: ServerProcess) -> None:
    result = run_in_venv(tritonclient_python, "-c", CHECKS, server.target, MODEL)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["labels"] == ["positive", "negative", "positive"]
    assert report["probabilities_shape"] == [3, 2] and report["probabilities_dtype"] == "float32"
    assert report["row_sums"] == pytest.approx([1.0, 1.0, 1.0], abs=1e-3)
    assert report["metadata"] == {
        "name": MODEL, "platform": "pytorch",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": ["-1"]}],
        "outputs": [{"name": "label", "datatype": "BYTES", "shape": ["-1"]},
                    {"name": "probabilities", "datatype": "FP32", "shape": ["-1", "2"]}],
    }
    assert report["model_ready"] and report["server_ready"] and not report["unknown_model_ready"]
    assert report["blank_text"] == "StatusCode.INVALID_ARGUMENT"
    assert report["wrong_datatype"] == "StatusCode.INVALID_ARGUMENT"
    assert report["unknown_model_infer"] == "StatusCode.NOT_FOUND"
    assert report["unknown_model_metadata"] == "StatusCode.NOT_FOUND"
    assert report["still_serving"]


COMPARE_FIELDS = r"""
import json, sys
from google.protobuf import descriptor_pb2
from tritonclient.grpc import service_pb2

ours = descriptor_pb2.FileDescriptorProto.FromString(open(sys.argv[1], "rb").read())
theirs = descriptor_pb2.FileDescriptorProto()
service_pb2.DESCRIPTOR.CopyToProto(theirs)

def fields(messages, prefix=""):
    found = {}
    for message in messages:
        name = prefix + message.name
        for field in message.field:
            found[f"{name}.{field.name}"] = (field.number, field.type, field.label, field.type_name)
        found.update(fields(message.nested_type, name + "."))
    return found

def methods(file):
    return {m.name: (m.input_type, m.output_type) for s in file.service for m in s.method}

our_fields, their_fields = fields(ours.message_type), fields(theirs.message_type)
print(json.dumps({
    "package": [ours.package, theirs.package],
    "services": [[s.name for s in ours.service], [s.name for s in theirs.service]],
    "field_mismatches": {k: [v, their_fields.get(k)] for k, v in our_fields.items() if their_fields.get(k) != v},
    "method_mismatches": {k: v for k, v in methods(ours).items() if methods(theirs).get(k) != v},
    "fields": len(our_fields),
}, default=list))
"""


def test_our_proto_matches_tritonclients_field_for_field(tritonclient_python: Path, tmp_path: Path) -> None:
    ours = tmp_path / "ours.binpb"
    ours.write_bytes(oip.DESCRIPTOR.serialized_pb)
    result = run_in_venv(tritonclient_python, "-c", COMPARE_FIELDS, str(ours))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["package"] == ["inference", "inference"]
    assert report["services"] == [["GRPCInferenceService"], ["GRPCInferenceService"]]
    assert report["field_mismatches"] == {} and report["method_mismatches"] == {}
    assert report["fields"] > 50  # every message we serve was compared, nested ones included
