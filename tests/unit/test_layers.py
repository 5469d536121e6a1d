"""The layers point one way (DESIGN.md): model/ imports nothing of cli, client or server, and
client/ nothing of model, server, cli or torch. Every import statement is read, lazy ones in
function bodies included, so a deferred import cannot hide a wrong arrow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

FORBIDDEN = {
    "model": ("rnn_sentiment.cli", "rnn_sentiment.client", "rnn_sentiment.server"),
    "client": ("rnn_sentiment.model", "rnn_sentiment.server", "rnn_sentiment.cli", "torch"),
}


def imported_modules(path: Path) -> list[str]:
    """Absolute module names a file imports (relative imports stay inside its own layer)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(layer: str) -> None:
    wrong = [
        f"{path.relative_to(REPO_ROOT)} imports {name}"
        for path in sorted((REPO_ROOT / layer).rglob("*.py"))
        for name in imported_modules(path)
        if any(name == banned or name.startswith(banned + ".") for banned in FORBIDDEN[layer])
    ]
    assert wrong == []


def test_the_walk_sees_a_lazy_import_in_a_function_body(tmp_path: Path) -> None:
    module = tmp_path / "lazy.py"
    module.write_text("def run():\n    from rnn_sentiment.cli.remote_eval import run_remote_eval\n")
    assert imported_modules(module) == ["rnn_sentiment.cli.remote_eval"]
