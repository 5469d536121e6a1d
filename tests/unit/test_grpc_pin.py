"""The gRPC pin, the committed stubs and the declared floors agree.

The server pins grpcio (constraints.txt: its grpc.aio unary path is slower on later releases,
docs/performance.md "The grpcio pin"); the stubs are generated with the matching grpcio-tools, and
refuse to import on a grpcio older than their generator. The SDK's and the package's floors are
what the stubs need, so an SDK user keeps any newer grpcio and protobuf.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

from tests.support import REPO_ROOT

STUBS = (REPO_ROOT / "proto" / "rnn_sentiment" / "v1", REPO_ROOT / "proto" / "inference")
PYPROJECTS = (REPO_ROOT / "pyproject.toml", REPO_ROOT / "sdk" / "pyproject.toml")


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([0-9.]+)", line)
        if match:
            pins[match[1].lower()] = match[2]
    return pins


def _generated(pattern: str, suffix: str) -> set[str]:
    found = set()
    for folder in STUBS:
        for path in folder.glob(f"*{suffix}"):
            found.update(re.findall(pattern, path.read_text()))
    return found


def _grpc_generated() -> str:
    (generated,) = _generated(r"GRPC_GENERATED_VERSION = '([0-9.]+)'", "_pb2_grpc.py")
    return generated


def _protobuf_generated() -> str:
    (generated,) = _generated(r"# Protobuf Python Version: ([0-9.]+)", "_pb2.py")
    return generated


def test_every_stub_comes_from_the_pinned_grpcio_tools() -> None:
    tools = re.search(r'"grpcio-tools==([0-9.]+)"', (REPO_ROOT / "pyproject.toml").read_text())
    assert tools, "pyproject.toml's dev extra pins grpcio-tools"
    assert _grpc_generated() == tools[1], "stubs and the grpcio-tools pin differ: run `make proto` and commit"


def test_the_pinned_runtime_can_import_the_stubs() -> None:
    pins = _pins()
    assert _numbers(pins["grpcio"]) >= _numbers(_grpc_generated())
    assert _numbers(pins["protobuf"]) >= _numbers(_protobuf_generated())
    for companion in ("grpcio-status", "grpcio-health-checking", "grpcio-reflection"):
        assert pins[companion].split(".")[:2] == pins["grpcio"].split(".")[:2], f"{companion} is from another grpcio release"


def test_the_floors_are_what_the_stubs_need() -> None:
    grpc_floor = f">={_grpc_generated()}"
    protobuf_floor = f">={_protobuf_generated()}"
    for pyproject in PYPROJECTS:
        text = pyproject.read_text()
        for package in ("grpcio", "grpcio-status", "grpcio-health-checking"):
            assert f'"{package}{grpc_floor}"' in text, f"{pyproject.name}: {package} floor is not {grpc_floor}"
        assert f'"protobuf{protobuf_floor},<8"' in text, f"{pyproject.name}: protobuf floor is not {protobuf_floor}"


def test_this_environment_runs_the_pinned_stack() -> None:
    """`make` installs with -c constraints.txt: the suite and the benchmarks run on the pin."""
    pins = _pins()
    for package in ("grpcio", "grpcio-status", "grpcio-health-checking", "grpcio-reflection", "protobuf"):
        assert version(package) == pins[package], f"{package} {version(package)} installed, {pins[package]} pinned"
