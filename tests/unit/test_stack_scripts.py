"""scripts/stack-lib.sh, the part of `make up`/`make down` that needs no Docker engine.

Compose detection runs the real functions with nothing on PATH but stand-in `docker` and
`docker-compose` commands that answer `version` as each Compose release does: the one way to
try v2's plugin, v2's standalone binary, v1 and "none" on a single machine.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

STACK_LIB = REPO_ROOT / "scripts" / "stack-lib.sh"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
BASH = shutil.which("bash") or "/bin/bash"


def _stand_in(directory: Path, name: str, answers: dict[str, str]) -> None:
    """A `name` command printing answers[ARGS] for ARGS, failing as an unknown command otherwise."""
    cases = "".join(f'    "{args}") echo "{out}"; exit 0 ;;\n' for args, out in answers.items())
    script = directory / name
    script.write_text(f'#!/bin/sh\ncase "$*" in\n{cases}esac\necho "{name}: unknown command: $*" >&2\nexit 1\n')
    script.chmod(0o755)


def _lib(snippet: str, path: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BASH, "-c", f'set -euo pipefail; source "$0"; {snippet}', str(STACK_LIB)],
        capture_output=True, text=True, timeout=30, env={"PATH": path, **(env or {})},
    )


def _detect(tmp_path: Path, docker: dict[str, str] | None, docker_compose: dict[str, str] | None,
            ) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if docker is not None:
        _stand_in(bin_dir, "docker", docker)
    if docker_compose is not None:
        _stand_in(bin_dir, "docker-compose", docker_compose)
    return _lib('stack_detect_compose; echo "${STACK_COMPOSE[*]}|$STACK_COMPOSE_VERSION"', str(bin_dir))


V2_PLUGIN = {"compose version --short": "2.29.7", "info": "ok"}
NO_PLUGIN = {"info": "ok"}   # a Docker CLI without the compose plugin: `docker compose` is unknown


@pytest.mark.parametrize(("docker", "docker_compose", "expected"), [
    pytest.param(V2_PLUGIN, {"version --short": "1.29.2"}, "docker compose|2.29.7", id="v2-plugin-preferred"),
    pytest.param(V2_PLUGIN, None, "docker compose|2.29.7", id="v2-plugin-only"),
    pytest.param(NO_PLUGIN, {"version --short": "1.29.2"}, "docker-compose|1.29.2", id="v1"),
    pytest.param(NO_PLUGIN, {"version --short": "1.28.0"}, "docker-compose|1.28.0", id="v1-oldest-with-profiles"),
    pytest.param(NO_PLUGIN, {"version --short": "v2.20.3"}, "docker-compose|2.20.3", id="v2-standalone"),
    pytest.param(None, {"version --short": "2.20.3"}, "docker-compose|2.20.3", id="no-docker-cli"),
])
def test_compose_detection_picks_v2_plugin_else_docker_compose(
    tmp_path: Path, docker: dict | None, docker_compose: dict | None, expected: str,
) -> None:
    result = _detect(tmp_path, docker, docker_compose)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_compose_v1_without_profiles_is_refused_with_the_version_needed(tmp_path: Path) -> None:
    result = _detect(tmp_path, NO_PLUGIN, {"version --short": "1.27.4"})
    assert result.returncode == 1
    assert "docker-compose 1.27.4 is too old" in result.stderr and "1.28" in result.stderr, result.stderr


def test_no_compose_at_all_says_what_to_install(tmp_path: Path) -> None:
    result = _detect(tmp_path, NO_PLUGIN, None)
    assert result.returncode == 1
    assert "neither `docker compose`" in result.stderr and "apt-get install docker-compose" in result.stderr


def test_the_scripts_choose_profiles_by_environment_never_by_flag() -> None:
    # `--profile` is an unknown flag to Compose v1 before 1.28 and to `docker compose` on a v1-only host.
    for script in ("stack-lib.sh", "stack-up.sh", "stack-down.sh"):
        code = [line for line in (REPO_ROOT / "scripts" / script).read_text().splitlines()
                if not line.lstrip().startswith("#")]
        assert not [line for line in code if "--profile" in line], script


def _compose_defaults() -> set[str]:
    """The default host addresses docker-compose.yml gives the listeners of the default stack."""
    text = COMPOSE_FILE.read_text()
    names = r"RNNS_(?:LB_ADDRESS|REPLICA\d_ADDRESS|REPLICA\d_METRICS|PROMETHEUS_ADDRESS)"
    return set(re.findall(rf"\$\{{{names}:-([^}}]+)\}}", text))


def test_the_addresses_checked_are_the_compose_defaults() -> None:
    result = _lib("stack_addresses", "/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    checked = {line.split()[1] for line in result.stdout.splitlines()}
    assert checked == _compose_defaults()
    assert "127.0.0.1:50051" in checked


def test_the_addresses_checked_follow_the_variables_and_dotenv_and_grafana(tmp_path: Path) -> None:
    env = {"RNNS_LB_ADDRESS": "127.0.0.1:6001", "STACK_WITH_GRAFANA": "1", "RNNS_GRAFANA_PORT": "6003"}
    result = _lib("stack_addresses", "/usr/bin:/bin", env)
    lines = dict(line.split() for line in result.stdout.splitlines())
    assert lines["load-balancer"] == "127.0.0.1:6001"
    assert lines["grafana"] == "127.0.0.1:6003"
    # .env beside docker-compose.yml, as Compose reads it; the environment wins over it.
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(STACK_LIB, repo / "scripts" / "stack-lib.sh")
    (repo / ".env").write_text('RNNS_PROMETHEUS_ADDRESS="127.0.0.1:6002"\nRNNS_LB_ADDRESS=127.0.0.1:6009\n# c\n')
    result = subprocess.run(
        [BASH, "-c", 'set -euo pipefail; source "$0"; stack_read_dotenv; stack_addresses',
         str(repo / "scripts" / "stack-lib.sh")],
        capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin", "RNNS_LB_ADDRESS": "127.0.0.1:6001"},
    )
    lines = dict(line.split() for line in result.stdout.splitlines())
    assert lines["prometheus"] == "127.0.0.1:6002"
    assert lines["load-balancer"] == "127.0.0.1:6001"


def test_grafana_image_is_read_from_the_compose_file() -> None:
    docker_compose = shutil.which("docker-compose")
    if docker_compose is None:
        pytest.skip("needs docker-compose (as root, `make test` installs it via scripts/ensure-system-packages.sh)")
    expected = re.search(r"^  grafana:\n(?:    .*\n)*?    image: (\S+)", COMPOSE_FILE.read_text(), re.M)
    assert expected is not None
    path = f"{Path(docker_compose).parent}:/usr/bin:/bin"
    result = _lib("stack_detect_compose; stack_grafana_image", path)
    assert result.stdout.strip() == expected.group(1), result.stderr
