"""replication.md and the terminal table of `telebench run --replicate`: per comparison, the original
verdict and p, the replication's on fresh seeds, and whether the verdict held."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from telebench.analysis.replication import HELD, INCONCLUSIVE, NOT_HELD
from telebench.analysis.verdicts import ALPHA, min_pairs_for
from telebench.render import fmt

COLUMNS = ("case", "optimizer", "device", "arm", "against", "original", "original p (raw → Holm)", "original seeds",
           "replication", "replication p (raw → Holm)", "replication seeds", "result")
OUTCOME_STYLE = {HELD: "bold green", NOT_HELD: "bold red", INCONCLUSIVE: "yellow"}
RULE = (  # the rule of telebench.analysis.replication.outcome, in words
    f"**{HELD}**: the original claimed *faster* or *slower* and the replication says the same word; or the "
    "original said *no clear difference* and the replication says so too (or *identical*); or both are "
    f"*identical*. **{NOT_HELD}**: the original claimed a difference and the replication found the opposite, "
    "*no clear difference* or *identical*; or the original said *no clear difference* and the replication "
    f"claims one; or the original was *identical* and the replication is not. **{INCONCLUSIVE}**: the "
    "replication had *too few seeds* for any verdict, or has no row for the comparison, or the original "
    "itself had *too few seeds*, so it claimed nothing to replicate."
)


def cells(line: dict[str, Any], metric: str | None = None) -> list[str]:
    """One comparison's cells, as plain text (the markdown and terminal tables share them); `metric`, the
    primary metric, words the verdicts (`fmt.verdict_word`)."""
    original, again = line.get("original") or {}, line.get("replication") or {}
    return [
        line["case"], line["optimizer"], line["device"], line["arm"], line["against"],
        fmt.verdict_word(original.get("verdict"), metric) or fmt.DASH, fmt.p_pair(original.get("p_value"), original.get("p_adjusted")),
        str(original.get("n_pairs") if original.get("n_pairs") is not None else fmt.DASH),
        fmt.verdict_word(again.get("verdict"), metric) or "not run", fmt.p_pair(again.get("p_value"), again.get("p_adjusted")),
        str(again.get("n_pairs") if again.get("n_pairs") is not None else fmt.DASH),
        line["outcome"],
    ]


def counts(lines: list[dict[str, Any]]) -> str:
    """ "2 held, 1 did not hold, 0 inconclusive"."""
    return ", ".join(f"{sum(line['outcome'] == o for line in lines)} {o}" for o in (HELD, NOT_HELD, INCONCLUSIVE))


def render_markdown(record: dict[str, Any]) -> str:
    """replication.md from the record `telebench.commands.replicate` writes to replication.json."""
    lines: list[dict[str, Any]] = record.get("comparisons") or []
    seeds, used = record.get("seeds") or [], record.get("used_seeds") or []
    metric = fmt.metric_name(record.get("primary_metric"))
    declared = "its pre-registered comparisons" if record.get("declared") else (
        "every `teleport` arm against the baseline (the suite declared no primary comparisons)")
    parts = [
        f"# telebench replication {record.get('replication')}: {record.get('suite')}",
        f"Reran {declared} on {len(seeds)} fresh seed(s), {_seeds(seeds)}, disjoint from all {len(used)} seed(s) "
        f"used before in `{record.get('out')}` (the suite's seeds and calibration seeds, and those of every "
        "earlier run and replication there). Only the arms these comparisons need ran, with the calibration "
        f"baselines their target needs. Primary metric: {metric}. Verdicts at α = {ALPHA:g}: the original's "
        "Holm-corrected over its report's family, the replication's over the replicated comparisons.",
        _table(list(COLUMNS), [cells(line, record.get("primary_metric")) for line in lines]) if lines
        else "No comparison to replicate.",
        f"**Result: {counts(lines)}.**",
        f"Rule: {RULE}",
    ]
    if len(seeds) < min_pairs_for(ALPHA):
        parts.append(f"> With fewer than {min_pairs_for(ALPHA)} seeds no replication verdict can reach α = {ALPHA:g}, "
                     "so every claimed difference comes out inconclusive; replicate on more seeds.")
    parts.append("The replication's own report, with every number, is [report.md](report.md); its results are "
                 "in `results.json` beside this file." if record.get("report", True) else
                 "Its results are in `results.json` beside this file (no report.md: the run had --no-report).")
    return "\n\n".join(parts) + "\n"


def render_terminal(record: dict[str, Any], console: Console) -> None:
    """The replication table, then the counts and where the files are."""
    lines: list[dict[str, Any]] = record.get("comparisons") or []
    table = Table(title=f"replication {record.get('replication')} of {escape(str(record.get('suite')))} on seeds "
                  f"{escape(_seeds(record.get('seeds') or []))}", title_justify="left", box=box.SIMPLE_HEAVY,
                  pad_edge=False, collapse_padding=True)
    for name in COLUMNS:
        if name != "device":
            table.add_column(name.replace(" p (raw → Holm)", " p\nraw→Holm").replace(" seeds", "\nseeds"),
                             justify="left" if name in ("case", "optimizer", "arm", "against", "result") else "right")
    for line in lines:
        row = cells(line, record.get("primary_metric"))
        device = "" if row[2] == "cpu" else f" @ {row[2]}"
        texts = [Text(c) for i, c in enumerate(row) if i != 2]
        texts[1] = Text(row[1] + device)
        texts[-1] = Text(row[-1], style=OUTCOME_STYLE.get(row[-1], ""))
        table.add_row(*texts)
    console.print(table)
    console.print(Text(f"{counts(lines)}; verdicts at α = {ALPHA:g} after Holm within each run's family.", style="dim"))


def _seeds(seeds: list[Any]) -> str:
    values = sorted(int(s) for s in seeds)
    if values and values == list(range(values[0], values[-1] + 1)) and len(values) > 2:
        return f"{values[0]}–{values[-1]}"
    return ", ".join(map(str, values)) or fmt.DASH


def _table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *(line(r) for r in rows)])
