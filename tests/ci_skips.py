"""A pytest plugin (loaded by conftest.py): under CI (CI=true) a skipped test is a failure, unless it is marked
`skip_ok_in_ci`. `make install` installs every dependency of the suite, so a skip there means something is
missing, not optional; a green run must have run everything."""
from __future__ import annotations

import os

import pytest

_SKIPPED_IN_CI: list[str] = []


def pytest_runtest_logreport(report):
    """Under CI (CI=true) a skipped test is a failure, unless it is marked `skip_ok_in_ci`: every dependency
    of the suite is installed by `make install`, so a skip there means something is missing, not optional."""
    if os.environ.get("CI") == "true" and report.skipped and "skip_ok_in_ci" not in report.keywords:
        _SKIPPED_IN_CI.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED_IN_CI and not os.environ.get("PYTEST_XDIST_WORKER"):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _SKIPPED_IN_CI:
        terminalreporter.write_line(f"CI=true: {len(_SKIPPED_IN_CI)} test(s) skipped without skip_ok_in_ci, which "
                                    f"fails the run: {', '.join(_SKIPPED_IN_CI)}", red=True)
