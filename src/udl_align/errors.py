"""The one exception type for bad input: the CLI turns it into one line on stderr and exit 2."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class InputError(Exception):
    """Bad input or usage. The message is one line, naming the file (if any) and the problem."""

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


def checked_device(name: str | torch.device) -> torch.device:
    """``torch.device(name)``, or an InputError naming the problem: an unknown device, or CUDA
    asked for where there is none."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device '{name}' (expected cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"unsupported device '{name}' (expected cpu, cuda or cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device '{name}' asked for, but no CUDA device is available")
    return device
