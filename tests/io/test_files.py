"""udl_align.io.files: the finite check, atomic output and the output-folder check."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from checks import expect_error, leftovers
from udl_align.io.files import atomic_output, check_finite, check_out_dir


def test_check_finite(tmp_path):
    check_finite(np.zeros((3, 4, 4), np.float32), tmp_path / "x")
    check_finite(np.arange(5), tmp_path / "x")  # integers: nothing to check
    big = np.zeros((1100, 2, 2), np.float32)
    big[1050, 1, 1] = np.inf  # in the second block
    expect_error(tmp_path / "x.mrc", "contains NaN or Inf pixels", check_finite, big,
                 tmp_path / "x.mrc")
    expect_error(tmp_path / "x.npz", "contains NaN or Inf values", check_finite,
                 np.array(np.nan), tmp_path / "x.npz", what="values")


def test_atomic_output_success_keeps_suffix(tmp_path):
    target = tmp_path / "x.npz"
    with atomic_output(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".x.tmp-") and tmp.suffix == ".npz"
        assert tmp.exists()
        tmp.write_bytes(b"hello")
    assert target.read_bytes() == b"hello"
    assert leftovers(tmp_path) == ["x.npz"]


def test_atomic_output_replaces_existing(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with atomic_output(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_atomic_output_failure_leaves_nothing(tmp_path):
    target = tmp_path / "x.npz"
    target.write_text("previous")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert target.read_text() == "previous"  # untouched
    assert leftovers(tmp_path) == ["x.npz"]


def test_atomic_output_errors(tmp_path):
    missing = tmp_path / "nope"
    expect_error(missing, "output directory does not exist",
                 lambda: atomic_output(missing / "x.csv").__enter__())
    folder = tmp_path / "dir.csv"
    folder.mkdir()
    expect_error(folder, "cannot write here", lambda: atomic_output(folder).__enter__())


def test_atomic_output_cannot_create(tmp_path):
    # A name longer than any file system allows: fails to create even for root.
    target = tmp_path / ("x" * 300 + ".csv")
    expect_error(target, "cannot write here", lambda: atomic_output(target).__enter__())
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_atomic_output_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        expect_error(ro / "x.csv", "cannot write here",
                     lambda: atomic_output(ro / "x.csv").__enter__())
    finally:
        ro.chmod(0o700)


def test_check_out_dir_makes_nothing(tmp_path):
    (tmp_path / "file").write_text("x")
    assert check_out_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert check_out_dir(tmp_path) == tmp_path
    assert leftovers(tmp_path) == ["file"]
    expect_error(tmp_path / "file", "output directory is not a folder", check_out_dir,
                 tmp_path / "file")
    expect_error(tmp_path / "file" / "d", "output directory is not a folder", check_out_dir,
                 tmp_path / "file" / "d")
    if Path("/proc/self").is_dir():  # Linux: a folder in which nothing can be made
        expect_error(Path("/proc/x"), "cannot make the output folder", check_out_dir, "/proc/x")
    assert leftovers(tmp_path) == ["file"]
