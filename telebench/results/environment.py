"""The environment recorded with every result, so that two result files can be told comparable."""

from __future__ import annotations

import platform
import socket
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import telebench


def cpu_model() -> str:
    """The CPU's marketing name; platform.processor() is often empty on Linux."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(devices: list[str] | None = None) -> dict[str, Any]:
    """Everything needed to tell whether two result files are comparable."""
    import torch  # imported here so that readers of results files (compare, report) stay light

    cuda = torch.cuda.is_available()
    names: dict[str, str] = {"cpu": cpu_model()}
    if cuda:
        for i in range(torch.cuda.device_count()):
            names[f"cuda:{i}"] = torch.cuda.get_device_name(i)
    return {
        "telebench": telebench.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "devices": sorted(set(devices or ["cpu"])),
        "device_names": names,
        "cpu_model": names["cpu"],
        "threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32) if cuda else None,
    }


