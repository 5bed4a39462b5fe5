"""docs/real-models.md's examples run as written (finding sites; teleport in a CNN and a transformer
training loop, with the optimizer state transported)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "real-models.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_doc_has_its_examples() -> None:
    assert len(BLOCKS) == 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_each_example_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(BLOCKS[index], f"{DOC.name} block {index}", "exec"), {})
    out = capsys.readouterr().out
    assert "accepted False" not in out and "False" not in out.split("accuracy")[0]
