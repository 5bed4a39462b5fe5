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
    return float(x)


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
    """ "1.3× [1.1–1.5]", or a dash for the baseline row."""
    if not block:
        return DASH
    return f"{ratio(block.get('median'))} [{ci(block.get('ci_low'), block.get('ci_high'))}]"


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
