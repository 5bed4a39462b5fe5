"""The pre-registered comparisons of a report, first, and the words that mark everything else exploratory.

Only a results file whose suite declared `analysis.primary_comparisons` has them; for any other file
every function here returns what leaves the report as it was (no section, the plain "## Summary").
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from telebench.analysis.families import EXPLORATORY, PREREGISTERED, declaration, key_of, unmatched
from telebench.render import fmt

Row = dict[str, Any]

COLUMNS = ("case", "optimizer", "device", "arm", "against", "seeds", "effect [CI]", "CI level", "p (raw → Holm)",
           "verdict")
COSTS = ("time_to_target", "steps_to_target")


def is_declared(results: dict[str, Any]) -> bool:
    return declaration((results.get("analysis") or {}).get("primary_comparisons")) is not None


def preregistered_rows(results: dict[str, Any]) -> list[Row]:
    rows = (results.get("analysis") or {}).get("preregistered") if is_declared(results) else None
    return [r for r in rows or [] if isinstance(r, dict)]


def exploratory_rows(rows: list[Row]) -> list[Row]:
    """The summary rows outside the pre-registered family (baseline rows included, as the reference)."""
    return [r for r in rows if r.get("family") != PREREGISTERED]


def family_sizes(results: dict[str, Any]) -> tuple[int, int]:
    """Holm's m in the pre-registered family and in the exploratory one."""
    pre = max((int(r.get("holm_m") or 0) for r in preregistered_rows(results)), default=0)
    rest = [r for r in results.get("summary") or [] if r.get("family") == EXPLORATORY]
    return pre, max((int(r.get("holm_m") or 0) for r in rest), default=0)


def correction_phrase(results: dict[str, Any], m: int) -> str:
    """ "over 8 comparison(s)", or, with a declaration, the two families apart."""
    if not is_declared(results):
        return f"over {m} comparison(s)"
    pre, rest = family_sizes(results)
    return (f"within each family apart: over the {pre} pre-registered comparison(s), and over the {rest} "
            "exploratory one(s)")


def family_tag(row: Row) -> str:
    """ "*Pre-registered.* " or "*Exploratory.* " before a verdict sentence; nothing without a declaration."""
    family = row.get("family")
    return f"*{family.capitalize()}.* " if family in (PREREGISTERED, EXPLORATORY) else ""


def cells(row: Row) -> list[str]:
    """A pre-registered comparison's cells: its primary metric's effect, interval, level, p and verdict."""
    cost = row.get("primary_metric") in COSTS
    effect = fmt.speedup(row) if cost else fmt.difference(row)
    level = "range" if row.get("ci_kind") == "range" else fmt.level(row.get("ci_level"))
    return [row["case"], row["optimizer"], row["device"], row["arm"], str(row.get("baseline_arm")),
            str(row.get("n_pairs") if row.get("n_pairs") is not None else fmt.DASH),
            effect if row.get("n_pairs") else fmt.DASH, level,
            fmt.DASH if row.get("identical") else fmt.p_pair(row.get("p_value"), row.get("p_adjusted")),
            fmt.verdict_word(row.get("verdict"), row.get("primary_metric"))
            or ("no paired seeds" if not row.get("n_pairs") else fmt.DASH)]


def markdown_sections(results: dict[str, Any], table: Any) -> list[str]:
    """`## Pre-registered comparisons` with its table (`table(header, rows)` draws it), or nothing."""
    if not is_declared(results):
        return []
    rows = preregistered_rows(results)
    metric = str((results.get("analysis") or {}).get("primary_metric") or "time_to_target")
    effect = ("speedup = against / arm per paired seed (above 1: the arm is faster)" if metric in COSTS else
              "arm − against per paired seed (below 0: the arm is lower)")
    pre, _ = family_sizes(results)
    parts = [
        "## Pre-registered comparisons",
        f"Declared in the suite before it ran (`analysis.primary_comparisons`), on the primary metric, "
        f"{fmt.metric_name(metric)}. Holm's correction runs over these {pre} comparison(s) alone; every other "
        "comparison in this report is exploratory, corrected over its own family.",
        table(list(COLUMNS), [cells(r) for r in rows]) if rows else "None of them ran in these results.",
        f"*effect*: the median {effect}, in brackets the order-statistic interval, at the level in *CI level* "
        "(a range below 80%); *seeds*: paired seeds; *p*: the exact sign test, raw → Holm-adjusted over this "
        "family; the verdict says it of the arm against the arm in *against*.",
    ]
    missing = unmatched(declaration((results.get("analysis") or {}).get("primary_comparisons")) or [],
                        [key_of(r) for r in rows])
    if missing:
        parts.append("Declared but not in these results (left out by --cases or --arms, or never run): " + "; ".join(
            f"{e['arm']} vs {e['against']}" + "".join(f", {k} {e[k]}" for k in ("case", "optimizer") if e.get(k))
            for e in missing) + ".")
    return parts


def summary_heading(results: dict[str, Any]) -> list[str]:
    """The heading of the summary table: "## Summary", or the exploratory comparisons' with a line."""
    if not is_declared(results):
        return ["## Summary"]
    _, rest = family_sizes(results)
    return ["## Exploratory comparisons",
            f"Every comparison the suite did not declare, with the baselines for reference. **Exploratory**: "
            f"Holm's correction runs over these {rest} comparison(s) apart from the pre-registered ones; treat a "
            "verdict here as a hypothesis to test on fresh seeds (`telebench run SUITE --out DIR --replicate K`)."]


def render_terminal(results: dict[str, Any], console: Console) -> None:
    """The pre-registered table first; nothing without a declaration."""
    if not is_declared(results):
        return
    rows = preregistered_rows(results)
    pre, _ = family_sizes(results)
    table = Table(title=f"pre-registered comparisons (Holm over these {pre})", title_justify="left",
                  box=box.SIMPLE_HEAVY, pad_edge=False, collapse_padding=True)
    for name in COLUMNS:
        if name != "device":
            table.add_column(name, justify="left" if name in ("case", "optimizer", "arm", "against", "verdict")
                             else "right", overflow="fold")
    for row in rows:
        texts = cells(row)
        device = "" if texts[2] == "cpu" else f" @ {texts[2]}"
        table.add_row(*(Text(c + (device if i == 1 else "")) for i, c in enumerate(texts) if i != 2))
    console.print(table if rows else Text("pre-registered comparisons: none of them ran in these results."))
    console.print(Text("everything below is exploratory: Holm over its own family.", style="dim"))
