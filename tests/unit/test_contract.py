"""The committed stubs match the .proto: regenerate them and compare byte for byte."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import REPO_ROOT

GENERATED = ("sentiment_pb2.py", "sentiment_pb2.pyi", "sentiment_pb2_grpc.py")


def test_generated_stubs_match_the_proto(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO_ROOT / 'proto'}",
         f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
         str(REPO_ROOT / "proto" / "rnn_sentiment" / "v1" / "sentiment.proto")],
        check=True,
    )
    committed_dir = REPO_ROOT / "proto" / "rnn_sentiment" / "v1"
    for name in GENERATED:
        fresh = (tmp_path / "rnn_sentiment" / "v1" / name).read_text()
        assert fresh == (committed_dir / name).read_text(), f"{name} is stale: run `make proto` and commit"


def test_every_field_and_message_is_commented() -> None:
    # AIP style: a comment line directly above every message, enum, rpc and field.
    lines = (REPO_ROOT / "proto" / "rnn_sentiment" / "v1" / "sentiment.proto").read_text().splitlines()
    for number, line in enumerate(lines):
        stripped = line.strip()
        declares = stripped.startswith(("message ", "enum ", "rpc ", "service ")) or (
            stripped.endswith(";") and "=" in stripped and not stripped.startswith(("syntax", "package", "option"))
        )
        if declares:
            assert lines[number - 1].strip().startswith("//"), f"line {number + 1} has no comment: {stripped}"


def _buf() -> str:
    path = Path(sys.executable).parent / "buf"
    assert path.exists(), "buf is missing: `make test` installs it (PyPI buf-bin, dev extra)"
    return str(path)


def test_buf_lint_passes() -> None:
    result = subprocess.run([_buf(), "lint"], cwd=REPO_ROOT / "proto", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_breaking_change_against_the_released_contract() -> None:
    result = subprocess.run(
        [_buf(), "breaking", "--against", "v1-baseline.binpb"],
        cwd=REPO_ROOT / "proto", capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_breaking_check_catches_a_renumbered_field(tmp_path: Path) -> None:
    source = (REPO_ROOT / "proto" / "rnn_sentiment" / "v1" / "sentiment.proto").read_text()
    broken = source.replace("repeated string texts = 1;", "repeated string texts = 99;")
    assert broken != source
    (tmp_path / "rnn_sentiment" / "v1").mkdir(parents=True)
    (tmp_path / "rnn_sentiment" / "v1" / "sentiment.proto").write_text(broken)
    (tmp_path / "buf.yaml").write_text((REPO_ROOT / "proto" / "buf.yaml").read_text())
    result = subprocess.run(
        [_buf(), "breaking", "--against", str(REPO_ROOT / "proto" / "v1-baseline.binpb")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0 and "texts" in result.stdout + result.stderr
