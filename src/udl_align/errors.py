"""The one exception type for bad input (the CLI turns it into one line on stderr and exit 2),
and the one warning type for input read although non-standard (one line on stderr, once per
file and problem)."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from collections.abc import Iterator
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


class InputWarning(UserWarning):
    """Input read although non-standard. The message is one line: "path: what was unusual"."""


_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def warn_input(problem: str, path: str | Path) -> None:
    """Issue an :class:`InputWarning` "path: problem", once per file and problem in a process
    (a file is opened several times in a run: its warning is shown the first time)."""
    key = (os.path.realpath(path), problem)
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(InputWarning(f"{path}: {problem}"), stacklevel=3)


@contextlib.contextmanager
def one_line_warnings(prog: str) -> Iterator[None]:
    """Within the block, each :class:`InputWarning` is printed as one line on stderr,
    ``"<prog>: warning: <message>"`` (other warnings are shown as usual)."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", InputWarning)  # warn_input already shows each once
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, InputWarning):
                print(f"{prog}: warning: {message}", file=sys.stderr)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


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
