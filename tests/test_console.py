"""make_console: rich's own console on a terminal, a wide one through a pipe, a file or a CI log."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from telebench.render.console import PIPED_WIDTH, make_console, piped_width


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No variable that forces rich's terminal detection either way."""
    for name in ("COLUMNS", "FORCE_TERMINAL", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "JUPYTER_COLUMNS"):
        monkeypatch.delenv(name, raising=False)


def test_off_a_terminal_the_console_is_wide() -> None:
    console = make_console(file=io.StringIO())
    assert not console.is_terminal and console.width == PIPED_WIDTH
    assert Console(file=io.StringIO()).width == 80  # what rich alone would do: the wrapping this avoids


def test_columns_is_respected_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "123")
    assert make_console(file=io.StringIO()).width == 123
    for junk in ("", "wide", "-5", "0"):
        assert piped_width({"COLUMNS": junk}) == PIPED_WIDTH


def test_on_a_terminal_it_is_riches_default() -> None:
    tty = FakeTerminal()
    console = make_console(file=tty)
    assert console.is_terminal and console.width == Console(file=tty).width


def test_stderr_console_writes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    console = make_console(stderr=True)
    assert console.stderr and console.width == PIPED_WIDTH  # pytest's captured stderr is no terminal
    console.print("to stderr")
    assert "to stderr" in capsys.readouterr().err
