"""The SDK and the client commands never import torch (a client-only install has none)."""

from __future__ import annotations

import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
        capture_output=True, text=True, check=True,
    ).stdout
    return set(out.split())


def test_importing_the_sdk_does_not_import_torch() -> None:
    modules = _modules_after("import rnn_sentiment.client, rnn_sentiment.client.render")
    assert "rnn_sentiment.client" in modules
    assert "torch" not in modules and "rnn_sentiment.model" not in modules and "rnn_sentiment.server" not in modules


def test_client_commands_do_not_import_torch() -> None:
    # `predict` against a port nobody listens on fails fast, but must not have loaded torch.
    modules = _modules_after(
        "from rnn_sentiment.cli.main import main\n"
        "main(['predict', '--target', '127.0.0.1:1', '--timeout', '0.5', 'good'])"
    )
    assert "torch" not in modules


def test_sdk_works_with_torch_blocked() -> None:
    # Simulate an install without torch: importing it raises, the SDK still imports and builds requests.
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from rnn_sentiment.client import SentimentClient\n"
        "with SentimentClient('127.0.0.1:1', timeout=10) as c:\n"
        "    try:\n"
        "        c.predict('good')\n"
        "    except Exception as e:\n"
        "        print(type(e).__name__, e.code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "SentimentError UNAVAILABLE"
