"""Shared benchmark plumbing: a table of teleport costs in gradient evaluations at the end of the run."""

from __future__ import annotations

import pytest

_ROWS = pytest.StashKey[list[tuple[str, dict]]]()


@pytest.fixture
def grad_eval_table(request: pytest.FixtureRequest) -> list[tuple[str, dict]]:
    """Rows (case name, extra_info) that the terminal summary prints as a table."""
    return request.config.stash.setdefault(_ROWS, [])


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    rows = config.stash.get(_ROWS, [])
    if not rows:
        return
    write = terminalreporter.write_line
    terminalreporter.section("teleport cost in gradient evaluations (10 steps; min ratio, median ratio; after: min ratio, each teleport after 20 passes)")
    write(f"{'case':58s} {'grad eval':>10s} {'teleport':>10s} {'evals':>7s} {'median':>7s} {'after':>7s}  accepted")
    for name, info in rows:
        write(
            f"{name:58s} {info['grad_eval_seconds'] * 1e3:8.3f}ms {info['teleport_seconds'] * 1e3:8.2f}ms "
            f"{info['grad_evals']:7.1f} {info['grad_evals_median']:7.1f} {info['grad_evals_after_passes']:7.1f}"
            f"  {info['accepted']}"
        )
