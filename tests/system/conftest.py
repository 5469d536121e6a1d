from __future__ import annotations

import pytest


_durations: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/system/" in report.nodeid.replace("\\", "/"):
        _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter) -> None:
    """Each system test's wall time (setup + call + teardown), always printed: CI keeps it honest."""
    if _durations:
        terminalreporter.section("system test timings")
        for nodeid, seconds in sorted(_durations.items(), key=lambda item: -item[1]):
            terminalreporter.write_line(f"{seconds:7.1f} s  {nodeid}")
        terminalreporter.write_line(f"{sum(_durations.values()):7.1f} s  total")
