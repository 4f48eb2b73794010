"""Where a number came from: software versions, code revision, machine and command line.

``collect(device)`` is called in the cell process (so the device name and thread count are the
cell's own); the git revision is looked up once per process with a short timeout and is None
where the package is not in a git checkout or git is missing.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import pinnbench

_ROOT = Path(pinnbench.__file__).resolve().parent.parent


@functools.lru_cache(maxsize=1)
def git_revision() -> dict[str, Any]:
    """``{"git_sha": str | None, "git_dirty": bool | None}`` of the checkout holding pinnbench."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(_ROOT), *args], capture_output=True, text=True,
                                 timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    if sha is None:
        return {"git_sha": None, "git_dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_sha": sha.strip(), "git_dirty": None if status is None else bool(status.strip())}


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def _host_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def collect(device: torch.device | str = "cpu", command: str | None = None) -> dict[str, Any]:
    device = torch.device(device)
    out: dict[str, Any] = {
        "pinnbench_version": pinnbench.__version__,
        **git_revision(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device),
        "device_name": device_name(device),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "pid": os.getpid(),
        "host_memory_bytes": _host_memory_bytes(),
        "command": command if command is not None else " ".join(sys.argv),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out["gpu_total_memory_bytes"] = props.total_memory
    return out
