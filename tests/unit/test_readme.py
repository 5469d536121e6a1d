"""The README and docs/ stay true to the tree: links resolve, commands name real things.

A newcomer copies commands from the README before reading anything else, so every `make X`,
`rnn-sentiment X`, `python -m X` and repository path it shows must exist, and every
`rnn-sentiment` command line in its code blocks must parse with the real CLI parser.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from rnn_sentiment.cli.main import build_parser
from tests.support import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
MAX_README_LINES = 250  # ../shared/DESIGN.md: a newcomer's first five minutes

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
MAKE_RULE = re.compile(r"^([A-Za-z0-9_.-]+(?:[ \t]+[A-Za-z0-9_.-]+)*)[ \t]*:(?!=)", re.M)
# `rnn-sentiment` as a command: not the repository's folder name (`cd rnn-sentiment`) nor a
# compose service (`rnn-sentiment-1`).
CLI_CALL = re.compile(r"(?:^|[\s/])rnn-sentiment[ \t]+([a-z][a-z-]*)")
MAKE_CALL = re.compile(r"(?:^|[\s;&|(])make((?:[ \t]+[A-Z_]+=\S+)*)[ \t]+([a-z][\w-]*)")
PYTHON_MODULE = re.compile(r"python3?[ \t]+-m[ \t]+([\w.]+)")
SHELL_BREAK = {"|", "||", "&&", ";", "&", ">", ">>", "2>&1"}


@dataclass(frozen=True)
class CodeText:
    """What a page shows as code: fenced blocks (whole command lines) and inline spans."""

    blocks: list[str]
    spans: list[str]

    @property
    def all(self) -> list[str]:
        return self.blocks + self.spans


def code_text(markdown: str) -> CodeText:
    blocks = FENCE.findall(markdown)
    prose = FENCE.sub("", markdown)
    return CodeText(blocks=blocks, spans=INLINE_CODE.findall(prose))


def command_lines(block: str) -> list[str]:
    """Shell lines of a code block, continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = []
    for line in joined.splitlines():
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:  # not shell (a layout sketch, Python): nothing to run
            continue
        if tokens:
            lines.append(shlex.join(tokens))
    return lines


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for _, heading in HEADING.findall(FENCE.sub("", path.read_text())):
        anchor = github_anchor(heading)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        result.add(anchor if count == 0 else f"{anchor}-{count}")
    return result


def make_targets() -> set[str]:
    targets = set()
    for rule in MAKE_RULE.findall((REPO_ROOT / "Makefile").read_text()):
        targets.update(rule.split())
    return targets


def cli_commands() -> set[str]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("the CLI parser has no subcommands")


def repository_paths(code: str) -> list[str]:
    """Tokens that start with a top-level entry of the repository and a slash."""
    top_level = {p.name for p in REPO_ROOT.iterdir() if not p.name.startswith(".") or p.name == ".ci"}
    found = []
    for match in re.finditer(r"[\w.-]+/[\w./-]*", code):
        if code[match.end():match.end() + 1] == "{":  # serving.{md,json}: a brace expansion
            continue
        token = match.group().rstrip(".,")
        if token.split("/")[0] in top_level:
            found.append(token)
    return found


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(f"{target}: no {resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(REPO_ROOT)}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_readme_is_read_in_five_minutes() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail to docs/"


def test_every_make_command_in_the_readme_is_a_target() -> None:
    targets = make_targets()
    named = [m[1] for code in code_text(README.read_text()).all for m in MAKE_CALL.findall(code)]
    assert named, "the README shows no make command: the pattern is wrong"
    assert not sorted(set(named) - targets), f"no such Makefile target: {sorted(set(named) - targets)}"


def test_every_cli_command_in_the_readme_is_a_subcommand() -> None:
    commands = cli_commands()
    named = [name for code in code_text(README.read_text()).all for name in CLI_CALL.findall(code)]
    assert named, "the README shows no rnn-sentiment command: the pattern is wrong"
    assert not sorted(set(named) - commands), f"no such rnn-sentiment command: {sorted(set(named) - commands)}"


def test_every_cli_line_in_the_readme_code_blocks_parses() -> None:
    """Flags too: a renamed or removed option fails here, not in a newcomer's shell."""
    failures = []
    calls = 0
    for block in code_text(README.read_text()).blocks:
        for line in command_lines(block):
            tokens = shlex.split(line)
            for start, token in enumerate(tokens):
                if token.split("/")[-1] != "rnn-sentiment" or start + 1 == len(tokens):
                    continue
                argv = []
                for argument in tokens[start + 1:]:
                    if argument in SHELL_BREAK:
                        break
                    argv.append(argument)
                if not argv or not re.fullmatch(r"[a-z][a-z-]*", argv[0]):  # `cd rnn-sentiment &&`
                    continue
                calls += 1
                try:
                    build_parser(argv[0]).parse_args(argv)
                except SystemExit:
                    failures.append(line)
    assert calls, "the README's code blocks run no rnn-sentiment command: the pattern is wrong"
    assert not failures, "these README lines do not parse:\n" + "\n".join(failures)


def test_every_python_module_and_path_in_the_readme_exists() -> None:
    code = code_text(README.read_text())
    missing = []
    for text in code.all:
        for module in PYTHON_MODULE.findall(text):
            if importlib.util.find_spec(module) is None:
                missing.append(f"python -m {module}")
        for path in repository_paths(text):
            if not (REPO_ROOT / path).exists():
                missing.append(path)
    assert not missing, f"the README names what does not exist: {missing}"


def test_the_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    """Each pattern finds a deliberately wrong example, so a passing test means something."""
    page = "```sh\nmake serev\n.venv/bin/rnn-sentiment predcit 'x'\npython -m bench.nothing\n```\n"
    code = code_text(page)
    assert [m[1] for c in code.all for m in MAKE_CALL.findall(c)] == ["serev"]
    assert [n for c in code.all for n in CLI_CALL.findall(c)] == ["predcit"]
    assert PYTHON_MODULE.findall(code.blocks[0]) == ["bench.nothing"]
    assert "serev" not in make_targets() and "predcit" not in cli_commands()
    assert CLI_CALL.findall("git clone x rnn-sentiment && cd rnn-sentiment\ndocker compose exec rnn-sentiment-1 ls") == []
    assert github_anchor("Lifecycle: signals, drain, restarts") == "lifecycle-signals-drain-restarts"
    assert github_anchor("Models and hot reload") == "models-and-hot-reload"
    assert repository_paths("pytest tests/nowhere.py tls/ca.pem bench/results/serving.{md,json}") == ["tests/nowhere.py"]
