"""The committed Open Inference Protocol stubs match proto/inference/grpc_service.proto, generated as
`make proto` does (under the virtual path rnn_sentiment/inference, so they import as
rnn_sentiment.inference and no top-level `inference` module is installed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import REPO_ROOT

PROTO_DIR = REPO_ROOT / "proto" / "inference"
GENERATED = ("grpc_service_pb2.py", "grpc_service_pb2.pyi", "grpc_service_pb2_grpc.py")


def test_generated_stubs_match_the_proto(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-Irnn_sentiment/inference={PROTO_DIR}",
         f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
         str(PROTO_DIR / "grpc_service.proto")],
        check=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "rnn_sentiment" / "inference" / name).read_text()
        assert fresh == (PROTO_DIR / name).read_text(), f"{name} is stale: run `make proto` and commit"


def test_the_stubs_import_under_our_namespace() -> None:
    from rnn_sentiment.inference import grpc_service_pb2, grpc_service_pb2_grpc

    assert grpc_service_pb2.DESCRIPTOR.package == "inference"  # upstream's package, on the wire
    assert grpc_service_pb2_grpc.GRPCInferenceServiceStub is not None
    assert not (REPO_ROOT / "inference").exists()


def test_every_field_and_message_is_commented() -> None:
    lines = (PROTO_DIR / "grpc_service.proto").read_text().splitlines()
    for number, line in enumerate(lines):
        stripped = line.strip()
        declares = stripped.startswith(("message ", "rpc ", "service ", "oneof ")) or (
            stripped.endswith(";") and "=" in stripped and not stripped.startswith(("syntax", "package", "option"))
        )
        if declares:
            assert lines[number - 1].strip().startswith("//"), f"line {number + 1} has no comment: {stripped}"
