"""The machine a profile ran on: telebench's usual environment record plus what GPU timings depend on."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import torch

from telebench.results.environment import environment


def profile_environment(device: torch.device) -> dict[str, Any]:
    """``results.environment()`` plus the device's name, CUDA runtime, driver, cuDNN and TF32 settings."""
    env = environment([str(device)])
    env["threads"] = torch.get_num_threads()
    env["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    if device.type != "cuda":
        env["device_name"] = env["cpu_model"]
        return env
    props = torch.cuda.get_device_properties(device)
    env.update(
        device_name=props.name,
        device_capability=f"{props.major}.{props.minor}",
        device_memory_bytes=props.total_memory,
        cuda_runtime=torch.version.cuda,
        cuda_driver=nvidia_driver_version(),
        cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
        tf32_cudnn=bool(torch.backends.cudnn.allow_tf32),
    )
    return env


def nvidia_driver_version() -> str | None:
    """The NVIDIA driver's version from nvidia-smi (torch.cuda does not expose it), or None."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if lines else None
