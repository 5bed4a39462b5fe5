"""The summary as a rich table: one section per case, one row per optimizer, device and arm."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console, JustifyMethod
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from telebench.render import fmt

VERDICT_STYLE = {"faster": "bold green", "slower": "bold red", "no clear difference": "yellow"}

COLUMNS = (
    "case",
    "optimizer",
    "device",
    "arm",
    "seeds",
    "misses",
    "time to target",
    "steps to target",
    "speedup time [95% CI]",
    "speedup steps [95% CI]",
    "p (time)",
    "overhead",
    "max teleport Δloss",
    "verdict",
)


def summary_cells(row: dict[str, Any]) -> list[str]:
    """The table cells of one summary row, as plain text (the markdown table uses the same cells)."""
    time_block = row.get("speedup_time") or {}
    return [
        row["case"],
        row["optimizer"],
        row["device"],
        row["arm"],
        str(row.get("n_seeds", fmt.DASH)),
        str(row.get("misses", fmt.DASH)),
        fmt.seconds(fmt.stat(row.get("time_to_target_s"))),
        fmt.steps(fmt.stat(row.get("steps_to_target"))),
        fmt.speedup(row.get("speedup_time")),
        fmt.speedup(row.get("speedup_steps")),
        fmt.p_value(time_block.get("p_value")),
        fmt.percent(fmt.stat(row.get("teleport_overhead"))),
        fmt.sci(row.get("max_teleport_loss_change")),
        row.get("verdict") or ("baseline" if row["arm"] == row.get("baseline_arm") else fmt.DASH),
    ]


def render_terminal(results: dict[str, Any], console: Console) -> None:
    """Print one summary table per case; speedups are baseline/arm over paired seeds (median, 95% CI).

    Compact by design (two-line speedup cells, light borders) so that ~105 columns show it unwrapped.
    """
    rows = results.get("summary") or []
    partial = " · PARTIAL (interrupted run)" if results.get("partial") else ""
    console.print(f"[bold]telebench · {escape(str(results.get('suite', '?')))}[/]{partial}")
    if not rows:
        console.print("No finished trials to summarise.")
        return
    for case in dict.fromkeys(r["case"] for r in rows):
        table = Table(
            title=f"case {escape(case)}",
            title_justify="left",
            box=box.SIMPLE_HEAVY,
            pad_edge=False,
            collapse_padding=True,
        )
        for name, justify in TERMINAL_COLUMNS:
            table.add_column(name, justify=justify, overflow="fold")  # fold, never hide digits
        for row in (r for r in rows if r["case"] == case):
            table.add_row(*_terminal_cells(row))
        console.print(table)
    console.print(
        "speedup = baseline / arm per paired seed: median and \\[bootstrap 95% CI]; a miss is never dropped "
        "(arm miss → 0, baseline miss → ∞); p: Wilcoxon signed-rank on log-speedups (time).",
        style="dim",
    )


TERMINAL_COLUMNS: tuple[tuple[str, JustifyMethod], ...] = (
    ("optimizer", "left"),
    ("arm", "left"),
    ("seeds", "right"),
    ("miss", "right"),
    ("time to\ntarget", "right"),
    ("steps to\ntarget", "right"),
    ("speedup\ntime", "right"),
    ("speedup\nsteps", "right"),
    ("p", "right"),
    ("over-\nhead", "right"),
    ("max\nΔloss", "right"),
    ("verdict", "left"),
)


def _terminal_cells(row: dict[str, Any]) -> list[Text]:
    """Cells as Text, not markup (names may hold brackets); speedups on two lines: median, then CI."""
    cells = summary_cells(row)
    device = "" if row["device"] == "cpu" else f" @ {row['device']}"
    two_line = [c.replace(" [", "\n[") for c in (cells[8], cells[9])]
    out = [
        Text(cells[1] + device),
        Text(cells[3]),
        *map(Text, cells[4:8]),
        *map(Text, two_line),
        *map(Text, cells[10:13]),
    ]
    verdict = cells[13]
    out.append(
        Text(
            verdict.replace("no clear difference", "no clear\ndifference"),
            style=VERDICT_STYLE.get(verdict, ""),
        )
    )
    return out
