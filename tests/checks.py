"""Checks the file tests share: an InputError's one-line message, and what a failed write
leaves behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from udl_align.errors import InputError


def expect_error(path: Path, phrase: str, fn, *args, **kwargs) -> InputError:
    """Call fn, expecting an InputError whose one-line message names path and the problem."""
    with pytest.raises(InputError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert Path(path).name in message, message
    assert phrase in message, message
    assert "\n" not in message
    return info.value


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())
