"""The SDK's own distribution (sdk/pyproject.toml): a light wheel, and a client-only install that works.

The wheel is built with `python -m build` from a copy of the folders it reads (the working tree
gets no build/ or egg-info), then checked: size, contents, typing markers. A throwaway virtual
environment (cached under build/, refreshed with each new wheel) installs it as a user would and
runs the commands: the client ones work without torch, the server ones say what to install.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

# What sdk/pyproject.toml reads, relative to the repository root.
SDK_SOURCES = ("sdk", "client", "cli", "proto/rnn_sentiment/v1")
MOST_WHEEL_BYTES = 1_000_000
CLIENT_ONLY_VENV = REPO_ROOT / "build" / "sdk-client-venv"


def _build_sdk_wheel(out: Path) -> Path:
    source = out / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")
    for name in SDK_SOURCES:
        shutil.copytree(REPO_ROOT / name, source / name, ignore=ignore)
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out / "dist"), str(source / "sdk")],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (wheel,) = (out / "dist").glob("rnn_sentiment_client-*.whl")
    return wheel


@pytest.fixture(scope="module")
def sdk_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_sdk_wheel(tmp_path_factory.mktemp("sdk"))


def test_the_wheel_is_light_and_carries_the_sdk_only(sdk_wheel: Path) -> None:
    names = zipfile.ZipFile(sdk_wheel).namelist()
    size = sdk_wheel.stat().st_size
    print(f"\n[sdk wheel] {sdk_wheel.name}: {size:,} bytes, {len(names)} files", end="")
    assert size <= MOST_WHEEL_BYTES
    assert "rnn_sentiment/client/py.typed" in names and "rnn_sentiment/v1/sentiment_pb2.pyi" in names
    assert "rnn_sentiment/client/predict_many.py" in names and "rnn_sentiment/cli/main.py" in names
    packages = {name.split("/")[1] for name in names if name.startswith("rnn_sentiment/")}
    assert packages == {"client", "cli", "v1"}, packages  # no model, server, checkpoints, inference
    assert not [n for n in names if n.endswith((".safetensors", "vocab.json"))]
    archive = zipfile.ZipFile(sdk_wheel)
    for name in names:
        if name.endswith(".py"):
            text = archive.read(name).decode()
            # Only the command's lazy `serve`/`train` imports may name the heavy layers.
            assert not re.search(r"^(import torch|from torch|from rnn_sentiment\.(model|server))", text, re.M), name


def test_the_sdk_version_follows_the_projects() -> None:
    def version(path: Path) -> str:
        return tomllib.loads(path.read_text())["project"]["version"]  # type: ignore[no-any-return]

    assert version(REPO_ROOT / "sdk" / "pyproject.toml") == version(REPO_ROOT / "pyproject.toml")


def _client_only_venv(wheel: Path) -> Path:
    """The cached venv with `wheel` (re)installed; the first run fetches grpcio and protobuf."""
    python = CLIENT_ONLY_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(CLIENT_ONLY_VENV)], check=True, timeout=120)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-c", str(REPO_ROOT / "constraints.txt"),
                        str(wheel)], check=True, timeout=600)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", str(wheel)],
                   check=True, timeout=300)
    return CLIENT_ONLY_VENV


@pytest.mark.slow
def test_a_client_only_install_runs_client_commands_and_names_the_server_extra(sdk_wheel: Path) -> None:
    venv = _client_only_venv(sdk_wheel)
    command = str(venv / "bin" / "rnn-sentiment")

    def run(*args: str) -> subprocess.CompletedProcess:
        # Outside the repository, so nothing is imported from the working tree.
        return subprocess.run([command, *args], capture_output=True, text=True, timeout=120, cwd=venv)

    imports = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import sys, pkgutil, importlib, rnn_sentiment.client, rnn_sentiment.cli\n"
         "for package in (rnn_sentiment.client, rnn_sentiment.cli):\n"
         "    for m in pkgutil.iter_modules(package.__path__):\n"
         "        if m.name not in ('render_png', '__main__'):\n"
         "            importlib.import_module(f'{package.__name__}.{m.name}')\n"
         "print('torch' in sys.modules, importlib.util.find_spec('torch') is None)"],
        capture_output=True, text=True, timeout=120, cwd=venv)
    assert imports.stdout.split() == ["False", "True"], imports.stderr
    assert run("predict", "--help").returncode == 0
    for server_command, extra in (("serve", "server"), ("train", "train"), ("eval", "server")):
        refused = run(server_command, "--address", "127.0.0.1:1")
        assert refused.returncode == 2, refused.stderr
        assert len(refused.stderr.splitlines()) == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert f"pip install '.[{extra}]'" in refused.stderr, refused.stderr
