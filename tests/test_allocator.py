"""The heap setting of the command line and the benchmarks."""

import ctypes.util
import platform

import pytest

from udl_align import allocator


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc's")
def test_the_heap_keeps_freed_memory_once_set():
    assert ctypes.util.find_library("c")
    assert allocator.keep_freed_memory()
    assert allocator.keep_freed_memory()  # a second call changes nothing


def test_the_command_line_sets_it_before_any_work(monkeypatch, capsys):
    from udl_align import cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1) or True)
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])  # argparse exits before any work: nothing set
    assert calls == []
    assert cli.main(["synth", "natural", "--images", "/nonexistent-folder", "--out",
                     "/tmp/never.npz"]) == 2
    assert calls == [1]
