"""The one exception type for bad input: the CLI turns it into one line on stderr and exit 2."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad input or usage. The message is one line, naming the file (if any) and the problem."""

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")
