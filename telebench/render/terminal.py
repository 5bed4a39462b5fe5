"""The summary as a rich table: one section per case, one row per optimizer, device and arm, then what
the numbers mean (primary metric, test, interval, correction) and why any arm was identical."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, JustifyMethod
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from telebench.analysis.censored import INTERVAL_NAME, TEST_NAME
from telebench.analysis.verdicts import ALPHA, CORRECTION_NAME, min_pairs_for
from telebench.render import fmt
from telebench.render.preregistered import correction_phrase, exploratory_rows
from telebench.render.preregistered import render_terminal as render_preregistered

VERDICT_STYLE = {
    "faster": "bold green",
    "slower": "bold red",
    "no clear difference": "yellow",
    "identical": "cyan",
    "too few seeds": "magenta",
}

COLUMNS = (
    "case",
    "optimizer",
    "device",
    "arm",
    "seeds",
    "misses",
    "time to target",
    "steps to target",
    "speedup time [CI]",
    "speedup steps [CI]",
    "CI level",
    "p (raw → Holm)",
    "seeds for 10%",
    "overhead",
    "max teleport Δloss",
    "verdict",
)


def report_settings(results: dict[str, Any]) -> tuple[str, float, int]:
    """The report's primary metric, α and Holm family size m: from its compared rows, else from
    results["analysis"] (default: time to target at 0.05)."""
    analysis = results.get("analysis") or {}
    metric, alpha = str(analysis.get("primary_metric") or "time_to_target"), float(analysis.get("alpha") or ALPHA)
    compared = [r for r in results.get("summary") or [] if r.get("primary_metric")]
    if compared:
        metric, alpha = str(compared[0]["primary_metric"]), float(compared[0].get("alpha") or alpha)
    return metric, alpha, max((int(r.get("holm_m") or 0) for r in compared), default=0)


def primary_block(row: dict[str, Any]) -> dict[str, Any]:
    """The primary metric's fields of a compared row (copied to its top level by the summary)."""
    return row if row.get("primary_metric") else {}


def summary_cells(row: dict[str, Any]) -> list[str]:
    """The table cells of one summary row, as plain text (the markdown table uses the same cells)."""
    prim = primary_block(row)
    return [
        row["case"],
        row["optimizer"],
        row["device"],
        row["arm"],
        str(row.get("n_seeds", fmt.DASH)),
        str(row.get("misses", fmt.DASH)),
        fmt.cost(row.get("time_to_target_s"), fmt.seconds),
        fmt.cost(row.get("steps_to_target"), fmt.steps),
        fmt.speedup(row.get("speedup_time")),
        fmt.speedup(row.get("speedup_steps")),
        "range" if prim.get("ci_kind") == "range" else fmt.level(prim.get("ci_level")),
        fmt.DASH if row.get("identical") else fmt.p_pair(prim.get("p_value"), prim.get("p_adjusted")),
        seeds_advice(row),
        fmt.percent(fmt.stat(row.get("teleport_overhead"))),
        fmt.sci(row.get("max_teleport_loss_change")),
        fmt.verdict_word(row.get("verdict"), row.get("primary_metric"))
        or ("baseline" if row["arm"] == row.get("baseline_arm") else fmt.DASH),
    ]


def seeds_advice(row: dict[str, Any]) -> str:
    """Seeds its spread needs for a 10 % effect: "17" (alone), "17/28" (alone / among the report's m)."""
    alone, holm = row.get("seeds_needed"), row.get("seeds_needed_holm")
    if row.get("primary_metric") is None or row.get("identical"):
        return fmt.DASH
    if alone is None:
        return "?"
    return str(alone) if holm in (None, alone) else f"{alone}/{holm}"


def render_terminal(results: dict[str, Any], console: Console) -> None:
    """Print one summary table per case, then the methods and notes.

    Compact by design (two-line cells, light borders) so that ~115 columns show it whole. Narrower, no
    word is ever broken: labels never wrap, numbers keep their width, and the least needed columns are
    left out, one at a time, with a line that names them (`fitting_table`).
    """
    rows = results.get("summary") or []
    partial = " · PARTIAL (interrupted run)" if results.get("partial") else ""
    console.print(f"[bold]telebench · {escape(str(results.get('suite', '?')))}[/]{partial}")
    if not rows:
        tuned = any(r.get("complete") for r in results.get("tuning") or [])
        console.print("Only the tuning stage ran; its choices follow." if tuned and not results.get("trials")
                      else "No finished trials to summarise.")
        return
    render_preregistered(results, console)  # the declared comparisons first, where the suite declared them
    left_out: list[str] = []
    shown = exploratory_rows(rows)
    for case in dict.fromkeys(r["case"] for r in shown):
        table, dropped = fitting_table(case, [r for r in shown if r["case"] == case], console)
        console.print(table)
        left_out += [name for name in dropped if name not in left_out]
    if left_out:
        names = ", ".join(" ".join(name.split()) for name in left_out)
        console.print(Text(f"{console.width} columns: left out {names}; widen the terminal (or set COLUMNS) "
                           "for every column, or see report.md.", style="dim"))
    for line in footer_lines(results):
        console.print(Text(line, style="dim"))
    for line in note_lines(rows):
        console.print(Text(line))


def footer_lines(results: dict[str, Any]) -> list[str]:
    """What the columns mean, in a few lines."""
    metric, alpha, m = report_settings(results)
    return [
        f"verdicts on the primary metric, {fmt.metric_name(metric)}: {TEST_NAME}, {CORRECTION_NAME} "
        f"{correction_phrase(results, m)} at α = {alpha:g}; a verdict needs ≥ {min_pairs_for(alpha)} informative "
        "seeds.",
        f"speedup = baseline / arm per paired seed: median, then its {INTERVAL_NAME} (its real level in "
        "'CI'; 'range' below 80%); a miss is censored at its budget, so '≥'/'≤' mark bounds.",
        "Δ loss = arm − baseline final loss, relative (train / val); seeds 10%: seeds its spread needs to "
        "detect a 10% effect with 80% power (alone / among this report's comparisons); cost: teleport share "
        "of the training clock, Δloss: largest relative loss change of a teleport.",
    ]


def note_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per identical arm, saying why it did nothing."""
    return [
        f"{r['arm']} ({r['optimizer']} on {r['device']}, {r['case']}): identical to the baseline on every "
        f"seed: {r.get('noop_reason')}."
        for r in rows
        if r.get("verdict") == "identical"
    ]


TERMINAL_COLUMNS: tuple[tuple[str, JustifyMethod], ...] = (
    ("optimizer", "left"),
    ("arm", "left"),
    ("seeds", "right"),
    ("time to\ntarget", "right"),
    ("speedup\ntime", "right"),
    ("speedup\nsteps", "right"),
    ("CI", "right"),
    ("Δ loss\ntr/val", "right"),
    ("p raw\n→Holm", "right"),
    ("seeds\n10%", "right"),
    ("cost\nΔloss", "right"),  # teleport overhead, then the largest teleport loss change
    ("verdict", "left"),
)


LABEL_COLUMNS = frozenset({"optimizer", "arm", "verdict"})  # the case is each table's title
# Left out in this order, one at a time, while the table's words cannot fit the console whole.
OPTIONAL_COLUMNS = ("seeds\n10%", "cost\nΔloss", "p raw\n→Holm", "Δ loss\ntr/val", "CI", "speedup\nsteps", "seeds")


def fitting_table(case: str, rows: list[dict[str, Any]], console: Console) -> tuple[Table, list[str]]:
    """The case's table, and the optional columns it leaves out, so that no word of any cell (label or
    number) is broken at the console's width; labels never wrap: at worst, when they alone overflow,
    they end in "…".

    Rich shrinks the widest columns first, whatever their words need, so where the table's widest form
    does not fit, each column gets a fixed width: at least its longest word (a label: its longest
    line), the room left going to the columns nearest their one-line width first."""
    cells = [_terminal_cells(row) for row in rows]
    unbounded = console.options.update_width(10 * max(console.width, 200))  # measure, never clamp
    dropped: list[str] = []
    while True:
        keep = [i for i, (name, _) in enumerate(TERMINAL_COLUMNS) if name not in dropped]
        table = _case_table(case, cells, keep)
        ranges = [_content_range(console, unbounded, i, cells) for i in keep]
        overhead = Measurement.get(console, unbounded, table).maximum - sum(high for _, high in ranges)
        room = console.width - overhead
        if sum(low for low, _ in ranges) <= room or len(dropped) == len(OPTIONAL_COLUMNS):
            break
        dropped.append(OPTIONAL_COLUMNS[len(dropped)])
    if sum(low for low, _ in ranges) <= room < sum(high for _, high in ranges):
        for column, width in zip(table.columns, _share_room(ranges, room), strict=True):
            column.width = width
    return table, dropped


def _content_range(console: Console, options: ConsoleOptions, index: int, cells: list[list[Text]]) -> tuple[int, int]:
    """(longest word, longest line) of a column's header and cells; a label's longest line for both."""
    name = TERMINAL_COLUMNS[index][0]
    sizes = [Measurement.get(console, options, t) for t in (Text(name), *(row[index] for row in cells))]
    high = max(m.maximum for m in sizes)
    return (high if name in LABEL_COLUMNS else max(m.minimum for m in sizes)), high


def _share_room(ranges: list[tuple[int, int]], room: int) -> list[int]:
    """Widths from each column's (least, most) that add up to at most `room`: every column its least,
    then the room left to the columns that need the least more to reach their most, in that order."""
    widths = [low for low, _ in ranges]
    spare = room - sum(widths)
    for i in sorted(range(len(ranges)), key=lambda i: ranges[i][1] - ranges[i][0]):
        grow = min(spare, ranges[i][1] - widths[i])
        widths[i] += grow
        spare -= grow
    return widths


def _case_table(case: str, cells: list[list[Text]], keep: list[int]) -> Table:
    table = Table(title=f"case {escape(case)}", title_justify="left", box=box.SIMPLE_HEAVY, pad_edge=False,
                  collapse_padding=True)
    for i in keep:
        name, justify = TERMINAL_COLUMNS[i]
        if name in LABEL_COLUMNS:  # never broken mid-word; cut with … only when labels alone overflow
            table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis")
        else:
            table.add_column(name, justify=justify, overflow="fold")  # fold, never hide digits
    for row in cells:
        table.add_row(*(row[i] for i in keep))
    return table


def _terminal_cells(row: dict[str, Any]) -> list[Text]:
    """Cells as Text, not markup (names may hold brackets); speedups on two lines: median, then CI."""
    cells = summary_cells(row)
    device = "" if row["device"] == "cpu" else f" @ {row['device']}"
    two_line = [c.replace(" [", "\n").removesuffix("]").replace("…", "…\n") for c in (cells[8], cells[9])]
    losses = fmt.DASH
    if row.get("train_loss_change") or row.get("val_loss_change"):
        losses = "\n".join(fmt.median_percent((row.get(k) or {}).get("relative"))
                           for k in ("train_loss_change", "val_loss_change"))
    misses = f"\n{cells[5]} miss" if row.get("misses") else ""
    out = [
        Text(cells[1] + device),
        Text(cells[3]),
        Text(cells[4] + misses),
        Text(cells[6].replace("…", "…\n")),  # a median known only between two values: one per line
        *map(Text, two_line),
        Text(cells[10]),
        Text(losses),
        Text(cells[11].replace(" → ", "\n→")),
        Text(cells[12]),
        Text(cells[13] if cells[14] == fmt.DASH else f"{cells[13]}\n{cells[14]}"),
    ]
    verdict = cells[15]
    out.append(
        Text(
            verdict.replace("no clear difference", "no clear\ndifference").replace("too few seeds", "too few\nseeds"),
            style=VERDICT_STYLE.get(verdict, ""),
        )
    )
    return out
