"""The "Tuned learning rates" of a `tune_lr` suite: each grid lr's median metric and n, and the lr chosen.

Reads only `results["tuning"]` (written by the train kind's summary; see
telebench/experiments/pairs/tuning.py), so `telebench report` redoes it from a results file alone.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

from telebench.render import fmt

EDGE = "at the grid's edge: widen the grid"
HEADER = ["case", "optimizer", "lr", "× written", "median metric", "n", "diverged", "chosen"]


def _lr(x: Any) -> str:
    v = fmt.num(x)
    return fmt.DASH if v is None else f"{v:.3g}"


def _median(point: dict[str, Any]) -> str:
    if not point.get("n"):
        return fmt.DASH
    median = fmt.num(point.get("median"))
    return "diverged" if median is None or median == float("inf") else f"{median:.4g}"


def _choice(row: dict[str, Any]) -> str:
    """One sentence on what was chosen for one case × optimizer, and how far to trust it."""
    where = f"**{row.get('case')}**, {row.get('optimizer')}"
    if not row.get("complete"):
        return f"- {where}: not chosen yet, as some tuning trials did not finish; rerun to complete them."
    written = _lr(row.get("written_lr"))
    if row.get("kept_written"):
        return f"- {where}: no tuning trial was counted (all skipped), so the written lr {written} is kept."
    text = (f"- {where}: lr {_lr(row.get('chosen_lr'))} (×{fmt.num(row.get('chosen_factor')):g} of the written "
            f"{written}), lowest median {row.get('metric')} over the calibration seeds")
    return text + (f"; **{EDGE}**." if row.get("edge") else ".")


def tuning_section(results: dict[str, Any]) -> list[str]:
    """The report's "Tuned learning rates" section (nothing for a suite without `tune_lr`)."""
    rows: list[dict[str, Any]] = results.get("tuning") or []
    if not rows:
        return []
    cells = []
    for row in rows:
        for point in row.get("grid") or []:
            chosen = row.get("complete") and point.get("lr") == row.get("chosen_lr") and not row.get("kept_written")
            cells.append([str(row.get("case")), str(row.get("optimizer")), _lr(point.get("lr")),
                          f"×{fmt.num(point.get('factor')):g}", _median(point), str(point.get("n", 0)),
                          str(point.get("diverged", 0)), "**chosen**" if chosen else ""])
    metrics = sorted({str(r.get("metric")) for r in rows})
    seeds = sorted({s for r in rows for s in r.get("seeds") or []})
    intro = (f"Each optimizer's lr was tuned before the compared runs: baseline-only tuning trials at the written "
             f"lr × each grid factor, on the calibration seeds ({', '.join(map(str, seeds))}) and with the case's "
             f"budget; the lr with the lowest median {' / '.join(metrics)} was chosen (ties: the smaller lr), and "
             "every calibration and compared trial trained with it. Tuning trials are never compared. A diverged "
             "trial counts as infinitely bad; *n* counts the seeds behind each median.")
    return ["## Tuned learning rates", intro, _table(cells), "\n".join(_choice(r) for r in rows)]


def _table(rows: list[list[str]]) -> str:
    right = {2, 3, 4, 5, 6}
    lines = ["| " + " | ".join(HEADER) + " |",
             "|" + "|".join("---:" if i in right else "---" for i in range(len(HEADER))) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_tuning(results: dict[str, Any], console: Console) -> None:
    """One line per tuned case × optimizer after the summary table: the lr chosen, and the edge warning."""
    for row in results.get("tuning") or []:
        what = f"{row.get('case')} · {row.get('optimizer')}"
        if not row.get("complete"):
            console.print(f"[yellow]tuned lr: {escape(what)}: not chosen yet (tuning trials unfinished)[/]",
                          highlight=False)
            continue
        line = (f"tuned lr: {escape(what)}: {_lr(row.get('chosen_lr'))} (written {_lr(row.get('written_lr'))}, "
                f"by median {escape(str(row.get('metric')))})")
        if row.get("edge"):
            line += f" [yellow]warning: {EDGE}[/]"
        console.print(line, highlight=False)
