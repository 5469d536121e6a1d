"""Building the package is quiet and ships what `make serve` serves.

`make serve` runs `pip install -e '.[server]'`; `pip install .` and the Docker image build a
wheel. Both go through setuptools' build backend, so the test calls that backend on a copy of
the sources (the working tree's build/ and egg-info stay untouched) and reads its stderr.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support import REPO_ROOT, SHIPPED_MODELS

# What the build reads: pyproject.toml names README.md and maps these folders to packages.
SOURCES = ("pyproject.toml", "README.md", "proto", "model", "server", "client", "cli")
# What a served checkpoint is made of (model/checkpoint.py reads these three).
CHECKPOINT_FILES = ("config.json", "model.safetensors", "vocab.json")


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("source")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "runs")
    for name in SOURCES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=ignore)
        else:
            shutil.copy2(source, root / name)
    return root


def _build(source: Path, hook: str, out: Path) -> tuple[str, Path]:
    """Run a PEP 517/660 hook of the project's backend; its stderr and the file it built."""
    out.mkdir()
    script = (
        "import sys, setuptools.build_meta as backend\n"
        f"print(backend.{hook}(sys.argv[1]))\n"
    )
    # -W default: every warning shown once, as pip's build subprocess shows them.
    result = subprocess.run(
        [sys.executable, "-W", "default", "-c", script, str(out)],
        cwd=source, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    built = out / result.stdout.strip().splitlines()[-1]
    return result.stderr, built


@pytest.mark.parametrize("hook", ["build_editable", "build_wheel"])
def test_build_prints_no_setuptools_warning(source_copy: Path, tmp_path: Path, hook: str) -> None:
    stderr, _ = _build(source_copy, hook, tmp_path / "dist")
    warnings = [line for line in stderr.splitlines() if "Warning" in line]
    assert not warnings, "\n".join(warnings)


def test_wheel_ships_the_shipped_checkpoints_and_nothing_else(source_copy: Path, tmp_path: Path) -> None:
    _, wheel = _build(source_copy, "build_wheel", tmp_path / "dist")
    names = set(zipfile.ZipFile(wheel).namelist())
    models = sorted(d.name for d in SHIPPED_MODELS.iterdir() if (d / "config.json").is_file())
    assert models, SHIPPED_MODELS
    expected = {f"rnn_sentiment/model/checkpoints/{m}/{f}" for m in models for f in CHECKPOINT_FILES}
    assert expected <= names, sorted(expected - names)
    shipped = {n for n in names if n.startswith("rnn_sentiment/model/checkpoints/")}
    # Training logs and TensorBoard runs stay in the repository.
    assert shipped == expected, sorted(shipped - expected)
    # Only the one namespace lands in site-packages (../shared/DESIGN.md).
    assert {n.split("/")[0] for n in names} == {"rnn_sentiment", wheel.name.split("-py3")[0] + ".dist-info"}
