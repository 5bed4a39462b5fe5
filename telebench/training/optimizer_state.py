"""What each optimizer keeps between steps, known without importing torch (suite validation stays light)."""

from __future__ import annotations

from typing import Any

DEFAULT_KWARGS: dict[str, dict[str, Any]] = {"momentum": {"momentum": 0.9}}  # `momentum` is SGD with these


def keeps_state(name: str, kwargs: dict[str, Any] | None = None) -> bool:
    """Whether the optimizer carries state between steps: plain SGD (momentum 0) has none to reset."""
    if name not in ("sgd", "momentum"):
        return True
    momentum = {**DEFAULT_KWARGS.get(name, {}), **(kwargs or {})}.get("momentum", 0.0)
    return bool(momentum)
