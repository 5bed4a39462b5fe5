"""Number formatting shared by the terminal table and the markdown report, so both read the same."""

from __future__ import annotations

import math
from typing import Any

DASH = "—"


def num(x: Any) -> float | None:
    """A summary number as float: None stays None, the JSON stand-ins "inf"/"-inf" become ±inf."""
    if x is None or isinstance(x, bool):
        return None
    if isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            return None
    v = float(x)
    return None if math.isnan(v) else v


def stat(block: dict[str, Any] | None, key: str = "median") -> float | None:
    return num((block or {}).get(key))


def ratio(x: Any) -> str:
    """A speedup: 1.32×, ∞× (the baseline missed), 0× (the arm missed)."""
    v = num(x)
    if v is None:
        return DASH
    if math.isinf(v):
        return "∞×"
    return f"{v:.2f}×" if v < 100 else f"{v:.3g}×"  # 2 decimals: 1.00× vs 1.04× must stay apart


def ci(low: Any, high: Any) -> str:
    """A speedup interval, "1.10–1.52"."""
    lo, hi = num(low), num(high)
    if lo is None or hi is None:
        return DASH
    return f"{_ratio_number(lo)}–{_ratio_number(hi)}"


def speedup(block: dict[str, Any] | None) -> str:
    """ "1.3× [1.1–1.5]", "≥ 1.28× [1.1–∞]" where only a bound on the median is known, or a dash."""
    if not block:
        return DASH
    return f"{median_ratio(block)} [{ci(block.get('ci_low'), block.get('ci_high'))}]"


def median_ratio(block: dict[str, Any] | None) -> str:
    """A speedup's median: the number where it is known, else the bound ("≥ 1.28×"), never ∞."""
    return _bounded(block or {}, ratio)


def median_difference(block: dict[str, Any] | None) -> str:
    """A paired difference's median, signed ("-0.0123", "≥ +0.01")."""
    return _bounded(block or {}, signed)


def median_percent(block: dict[str, Any] | None) -> str:
    """A relative difference's median as a signed percentage ("-5.3%")."""
    return _bounded(block or {}, signed_percent)


def _bounded(block: dict[str, Any], show: Any) -> str:
    bound = block.get("bound")
    if bound is None:
        return str(show(block.get("median")))
    if bound == "≥":
        return f"≥ {show(block.get('median_low'))}"
    if bound == "≤":
        return f"≤ {show(block.get('median_high'))}"
    if bound == "between":  # known to lie between two values: one value where they print alike
        low, high = show(block.get("median_low")), show(block.get("median_high"))
        return low if low == high else f"{low}…{high}"
    return "unknown"


def difference(block: dict[str, Any] | None) -> str:
    """ "-0.0123 [-0.02, -0.004]": a paired difference's median and interval."""
    if not block or block.get("n_pairs") == 0 or block.get("median_low") is None:
        return DASH
    return f"{median_difference(block)} [{signed(block.get('ci_low'))}, {signed(block.get('ci_high'))}]"


def relative(block: dict[str, Any] | None) -> str:
    """ "-5.3% [-6.1%, -4.4%]": a paired relative difference's median and interval."""
    if not block or block.get("median_low") is None:
        return DASH
    return (f"{median_percent(block)} [{signed_percent(block.get('ci_low'))}, "
            f"{signed_percent(block.get('ci_high'))}]")


def level(x: Any) -> str:
    """An interval's real level, rounded down so it never claims more: "93.75%", "87.5%"."""
    v = num(x)
    if v is None:
        return DASH
    pct = math.floor(v * 10000 + 1e-6) / 100
    return f"{pct:.2f}".rstrip("0").rstrip(".") + "%"


def interval_name(block: dict[str, Any] | None) -> str:
    """ "93.75% CI", or "range" where the level is below what is worth calling an interval."""
    if not block or block.get("ci_level") is None:
        return DASH
    if block.get("ci_kind") == "range":
        return "range"
    return f"{level(block.get('ci_level'))} CI"


def p_pair(raw: Any, adjusted: Any) -> str:
    """Raw and Holm-adjusted p: "0.0078 → 0.023"; a dash where there is no test."""
    if num(raw) is None:
        return DASH
    return f"{p_value(raw)} → {p_value(adjusted)}" if num(adjusted) is not None else p_value(raw)


def signed(x: Any) -> str:
    """A difference with its sign, "+0.0123", "-0.5"; exactly 0 is "0"."""
    v = num(x)
    if v is None:
        return DASH
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return "0" if v == 0 else f"{v:+.3g}"


def signed_percent(x: Any) -> str:
    v = num(x)
    if v is None:
        return DASH
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return "0%" if v == 0 else f"{100 * v:+.2g}%"


def metric_name(metric: Any) -> str:
    """The words for a primary metric."""
    return METRIC_NAMES.get(str(metric), str(metric))


METRIC_NAMES = {
    "time_to_target": "time to target (training clock)",
    "steps_to_target": "steps to target",
    "final_train_loss": "final training loss",
    "final_val_loss": "final validation loss",
    "auc_log_train_loss": "area under the log training-loss curve",
}


def p_value(p: Any) -> str:
    v = num(p)
    if v is None:
        return DASH
    return "<0.001" if v < 0.001 else f"{v:.2g}"


def seconds(x: Any) -> str:
    v = num(x)
    if v is None:
        return DASH
    if math.isinf(v):
        return "miss"
    return f"{v:.3g} s"


def steps(x: Any) -> str:
    v = num(x)
    if v is None:
        return DASH
    if math.isinf(v):
        return "miss"
    return f"{v:.0f}"


def cost(block: dict[str, Any] | None, unit: Any = seconds) -> str:
    """An arm's median cost over seeds, "1.2 s", or its bound "≥ 2.5 s" when misses hide it."""
    if not block:
        return DASH
    if block.get("bound") == "≥":
        return f"≥ {unit(block.get('median_low'))}"
    if block.get("bound") == "between":
        low, high = str(unit(block.get("median_low"))), str(unit(block.get("median_high")))
        return low if low == high else f"{low.removesuffix(' s')}…{high}"
    return str(unit(block.get("median")))


def percent(x: Any) -> str:
    v = num(x)
    return DASH if v is None else f"{100 * v:.2g}%"


def sci(x: Any) -> str:
    v = num(x)
    return DASH if v is None else f"{v:.1e}"


def value(x: Any) -> str:
    v = num(x)
    return DASH if v is None else _plain(v)


def _ratio_number(v: float) -> str:
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return f"{v:.2f}" if abs(v) < 100 else f"{v:.3g}"


def _plain(v: float) -> str:
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return f"{v:.3g}"


_LOSS_WORDING = {"faster": "lower loss", "slower": "higher loss"}


def verdict_word(word: Any, metric: Any) -> Any:
    """A row's verdict as a table prints it. The row's word is *faster*/*slower* whatever decided it;
    with a loss as the primary metric (final training or validation loss, area under the log loss) the
    same decision is printed *lower loss*/*higher loss*, so "slower" never stands for a higher loss."""
    if metric in (None, "time_to_target", "steps_to_target"):
        return word
    return _LOSS_WORDING.get(word, word) if isinstance(word, str) else word

