"""Turn a suite's device name into a torch.device, failing early with a fix when it cannot exist."""

from __future__ import annotations

import re

import torch

from telebench.errors import UserError

DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N")
_CUDA = re.compile(r"^cuda(?::(\d+))?$")


def resolve_device(name: str | torch.device) -> torch.device:
    """`auto` picks CUDA when present; an explicit CUDA device that is absent is a user error, not a crash."""
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = _CUDA.match(text)
    if match is None:
        raise UserError(f"device {name!r} is not supported; use one of {', '.join(DEVICE_NAMES)}.")
    if not torch.cuda.is_available():
        raise UserError(
            f"device {name!r} was requested but no CUDA device is available to torch {torch.__version__}; "
            "use `devices: [cpu]`, or `devices: [auto]` to run on CUDA only where it exists."
        )
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise UserError(
            f"device {name!r} was requested but only {count} CUDA device(s) exist; use an index below {count}."
        )
    return torch.device("cuda", index)
