"""@grpc/grpc-js for the benchmarks' and tests' Node clients, installed once from examples/node/package.json.

npm installs the example's two packages (@grpc/grpc-js, @grpc/proto-loader) under build/node-example;
a later call finds them there while package.json is unchanged.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_JSON = REPO_ROOT / "examples" / "node" / "package.json"
NODE_DEPS = REPO_ROOT / "build" / "node-example"


def node_available() -> bool:
    return shutil.which("node") is not None and shutil.which("npm") is not None


def node_modules() -> Path:
    """The node_modules directory to put on NODE_PATH, installed by npm when missing or stale."""
    marker = NODE_DEPS / "package.json"
    if not (marker.exists() and marker.read_text() == PACKAGE_JSON.read_text() and (NODE_DEPS / "node_modules").is_dir()):
        NODE_DEPS.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PACKAGE_JSON, marker)
        done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(NODE_DEPS)],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            marker.unlink()  # the next call tries again
            raise RuntimeError(f"npm install into {NODE_DEPS} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return NODE_DEPS / "node_modules"
