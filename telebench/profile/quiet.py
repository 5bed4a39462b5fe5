"""Keep torch.profiler's chatter off stderr, and everything else on it.

torch.profiler (kineto, and c10's allocator under ``profile_memory``) writes status lines straight to
file descriptor 2, past Python's ``sys.stderr``: ``USDT: ... profiler_start`` / ``profiler_stop``
around every profile, and "Memory block of unknown size was allocated before the profiling started"
when a tensor made before the profile is freed inside it. None of them is a problem with the profile;
environment variables cannot silence the USDT lines without silencing kineto's real errors too.

``quiet_profiler()`` points fd 2 at a pipe for the duration of the block; a thread reads it line by
line and passes every line that is not one of those (``NOISE``) on to the real stderr as it comes,
so a genuine error still appears, and in order.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

NOISE = (
    re.compile(r"^USDT:.*\] profiler_(start|stop)\s*$"),  # kineto's markers around every profile
    re.compile(r"Memory block of unknown size was allocated before the profiling started"),
    re.compile(r"^ERROR:.*gpuGetDeviceCount failed"),  # kineto probing for a GPU on a CPU-only machine
)


def is_noise(line: str) -> bool:
    """Whether a stderr line is one of the profiler's status lines (NOISE)."""
    return any(p.search(line) for p in NOISE)


@contextmanager
def quiet_profiler() -> Iterator[None]:
    """Run the block with the profiler's status lines on fd 2 dropped and every other line passed on."""
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 to redirect (a closed stderr): nothing to keep quiet
        yield
        return
    read_fd, write_fd = os.pipe()
    forward = threading.Thread(target=_forward, args=(read_fd, saved), name="telebench-stderr", daemon=True)
    forward.start()
    _flush()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield
    finally:
        _flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the thread reads to the end and stops
        forward.join(timeout=5)
        os.close(saved)


def _forward(read_fd: int, out_fd: int) -> None:
    """Copy lines from `read_fd` to `out_fd`, dropping noise, until the pipe closes."""
    with os.fdopen(read_fd, "rb") as pipe:
        for raw in pipe:
            if not is_noise(raw.decode("utf-8", errors="replace")):
                os.write(out_fd, raw)


def _flush() -> None:
    """Write out what Python buffered for stderr, so it lands on the right side of a redirection."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
