"""Tests for udl_align.io: round trips, and every validation error (InputError, one line)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
from PIL import Image

from conftest import CHIMERA_STAMP, MAP_ID_AT, STAMP_AT, patched, write_cs
from udl_align.errors import InputError, InputWarning
from udl_align.io import files as io
from udl_align.io.files import atomic_output, check_finite, check_out_dir
from udl_align.io.images import list_images, read_image, read_npy
from udl_align.io.mrc import MrcStack, read_mrc, read_mrc_header, write_mrc
from udl_align.io.pairs import Pairs, read_estimates, read_pairs, write_estimates, write_pairs
from udl_align.io.particle_files import (
    check_stacks_exist,
    read_particles_cs,
    read_particles_star,
    write_particles_star,
)

RNG = np.random.default_rng(0)


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


# --------------------------------------------------------------------------------------------
# check_finite and atomic_output
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def test_list_images(tmp_path):
    grey = Image.fromarray(np.zeros((4, 4), np.uint8))
    for name in ("b.PNG", "a.jpg", "c.tiff", "d.TIF", "e.jpeg", ".hidden.png"):
        grey.save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    grey.save(tmp_path / "sub" / "f.png")  # sub-folders count
    (tmp_path / ".cache").mkdir()
    grey.save(tmp_path / ".cache" / "g.png")  # hidden folders do not
    names = [p.name for p in list_images(tmp_path)]
    assert names == ["a.jpg", "b.PNG", "c.tiff", "d.TIF", "e.jpeg", "f.png"]


def test_list_images_errors(tmp_path):
    expect_error(tmp_path / "nope", "no such folder", list_images, tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    expect_error(tmp_path / "file", "not a folder", list_images, tmp_path / "file")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    expect_error(tmp_path / "empty", "no PNG/JPEG/TIFF images", list_images, tmp_path / "empty")


def test_read_image_rgb_png(tmp_path):
    rgb = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    img = read_image(tmp_path / "rgb.png")
    expected = np.asarray(Image.fromarray(rgb).convert("L"), np.float32) / 255
    assert img.dtype == np.float32 and img.shape == (6, 5)
    np.testing.assert_allclose(img, expected)


def test_read_image_rgba_palette_and_grey(tmp_path):
    rgba = RNG.integers(0, 256, (4, 4, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(rgba[..., :3]).convert("P").save(tmp_path / "pal.png")
    grey = RNG.integers(0, 256, (4, 4), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.tif")
    for name in ("rgba.png", "pal.png", "grey.tif"):
        img = read_image(tmp_path / name)
        assert img.dtype == np.float32 and img.shape == (4, 4)
        assert 0 <= img.min() and img.max() <= 1
    np.testing.assert_allclose(read_image(tmp_path / "grey.tif"), grey / 255, atol=1e-7)


def test_read_image_16bit_and_float(tmp_path):
    a16 = RNG.integers(0, 65536, (5, 5)).astype(np.uint16)
    Image.fromarray(a16).save(tmp_path / "a16.tif")
    Image.fromarray(a16).save(tmp_path / "a16.png")
    for name in ("a16.tif", "a16.png"):
        np.testing.assert_allclose(read_image(tmp_path / name), a16 / 65535, rtol=1e-6)
    f32 = RNG.normal(size=(5, 5)).astype(np.float32) * 1000
    Image.fromarray(f32).save(tmp_path / "f.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif"), f32)
    i32 = RNG.integers(-100000, 100000, (5, 5)).astype(np.int32)
    Image.fromarray(i32).save(tmp_path / "i.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "i.tif"), i32.astype(np.float32))


def test_read_image_errors(tmp_path):
    expect_error(tmp_path / "no.png", "no such file", read_image, tmp_path / "no.png")
    (tmp_path / "empty.png").write_bytes(b"")
    expect_error(tmp_path / "empty.png", "empty", read_image, tmp_path / "empty.png")
    (tmp_path / "junk.png").write_bytes(RNG.bytes(300))
    expect_error(tmp_path / "junk.png", "cannot read image", read_image, tmp_path / "junk.png")
    Image.fromarray(RNG.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    expect_error(tmp_path / "cut.png", "cannot read image", read_image, tmp_path / "cut.png")
    bad = np.ones((4, 4), np.float32)
    bad[1, 2] = np.nan
    Image.fromarray(bad).save(tmp_path / "nan.tif")
    expect_error(tmp_path / "nan.tif", "contains NaN or Inf pixels", read_image,
                 tmp_path / "nan.tif")


# --------------------------------------------------------------------------------------------
# .npy
# --------------------------------------------------------------------------------------------


def test_read_npy(tmp_path):
    stack = RNG.normal(size=(3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "s.npy", stack)
    out = read_npy(tmp_path / "s.npy")
    assert isinstance(out, np.memmap)  # float32: not loaded
    np.testing.assert_array_equal(out, stack)
    image = RNG.normal(size=(8, 8))
    np.save(tmp_path / "i.npy", image)
    out = read_npy(tmp_path / "i.npy")
    assert out.dtype == np.float32 and out.shape == (8, 8)
    np.testing.assert_allclose(out, image, rtol=1e-6)


def test_read_npy_errors(tmp_path):
    def save(name, arr):
        np.save(tmp_path / name, arr)
        return tmp_path / name

    expect_error(tmp_path / "no.npy", "no such file", read_npy, tmp_path / "no.npy")
    (tmp_path / "junk.npy").write_bytes(RNG.bytes(200))
    expect_error(tmp_path / "junk.npy", "not a readable .npy file", read_npy,
                 tmp_path / "junk.npy")
    p = save("v.npy", np.zeros(5, np.float32))
    expect_error(p, "expected a 2-D image or a 3-D stack", read_npy, p)
    p = save("4d.npy", np.zeros((2, 2, 4, 4), np.float32))
    expect_error(p, "expected a 2-D image or a 3-D stack", read_npy, p)
    p = save("rect.npy", np.zeros((2, 4, 5), np.float32))
    expect_error(p, "images are not square (4x5)", read_npy, p)
    p = save("empty.npy", np.zeros((0, 4, 4), np.float32))
    expect_error(p, "empty", read_npy, p)
    p = save("c.npy", np.zeros((2, 4, 4), np.complex64))
    expect_error(p, "not a real-valued array", read_npy, p)
    bad = np.zeros((1100, 2, 2), np.float32)
    bad[1099, 0, 0] = np.nan
    p = save("nan.npy", bad)
    expect_error(p, "contains NaN or Inf pixels", read_npy, p)


# --------------------------------------------------------------------------------------------
# MRC
# --------------------------------------------------------------------------------------------


def test_mrc_stack_round_trip(tmp_path):
    stack = RNG.normal(size=(5, 8, 8)).astype(np.float32)
    path = tmp_path / "s.mrcs"
    write_mrc(path, stack, pixel_size=1.7)
    with mrcfile.open(path) as mrc:
        assert mrc.header.ispg == 0  # marked as a stack
    with MrcStack(path) as s:
        assert (s.n, len(s), s.size) == (5, 5, 8)
        assert s.pixel_size == pytest.approx(1.7, rel=1e-6)
        one = s[2]
        assert one.shape == (8, 8) and one.dtype == np.float32
        np.testing.assert_array_equal(one, stack[2])
        np.testing.assert_array_equal(s[np.int64(4)], stack[4])
        np.testing.assert_array_equal(s[1:3], stack[1:3])
        np.testing.assert_array_equal(s[np.array([4, 0, 4])], stack[[4, 0, 4]])
        assert not np.shares_memory(one, stack)
        one[:] = 0  # a copy: the file is not touched
        np.testing.assert_array_equal(s[2], stack[2])
    assert leftovers(tmp_path) == ["s.mrcs"]


def test_mrc_single_image_and_zero_pixel_size(tmp_path):
    image = RNG.normal(size=(6, 6)).astype(np.float32)
    path = tmp_path / "one.mrc"
    write_mrc(path, image, pixel_size=0.0)
    with MrcStack(path) as s:
        assert (s.n, s.size, s.pixel_size) == (1, 6, 1.0)
        assert s[0:1].shape == (1, 6, 6)
        np.testing.assert_array_equal(s[0], image)
    np.testing.assert_array_equal(read_mrc(path), image)


def test_mrc_volume(tmp_path):
    volume = RNG.normal(size=(4, 4, 4)).astype(np.float32)
    vol = tmp_path / "map.mrc"
    write_mrc(vol, volume, pixel_size=2.5, stack=False)
    with mrcfile.open(vol) as mrc:
        assert mrc.is_volume()
    expect_error(vol, "is a 3-D volume, expected a 2-D image or a stack", MrcStack, vol)
    with MrcStack(vol, allow_volume=True) as s:
        assert s.n == 4
    np.testing.assert_array_equal(read_mrc(vol), volume)
    # A .mrcs suffix says "stack" even when the header says volume (older RELION files).
    mrcs = tmp_path / "old.mrcs"
    write_mrc(mrcs, volume, stack=False)
    with MrcStack(mrcs) as s:
        assert s.n == 4


@pytest.mark.filterwarnings("ignore:Data array contains NaN:RuntimeWarning")
def test_mrc_errors(tmp_path):
    expect_error(tmp_path / "no.mrcs", "no such file", MrcStack, tmp_path / "no.mrcs")
    (tmp_path / "junk.mrcs").write_bytes(RNG.bytes(3000))
    expect_error(tmp_path / "junk.mrcs", "not a readable MRC file", MrcStack,
                 tmp_path / "junk.mrcs")
    expect_error(tmp_path / "junk.mrcs", "not a readable MRC file", read_mrc,
                 tmp_path / "junk.mrcs")
    (tmp_path / "zero.mrc").write_bytes(b"")
    expect_error(tmp_path / "zero.mrc", "not a readable MRC file", MrcStack,
                 tmp_path / "zero.mrc")
    write_mrc(tmp_path / "ok.mrcs", np.zeros((4, 8, 8), np.float32))
    data = (tmp_path / "ok.mrcs").read_bytes()
    (tmp_path / "cut.mrcs").write_bytes(data[:-100])
    expect_error(tmp_path / "cut.mrcs", "not a readable MRC file", MrcStack,
                 tmp_path / "cut.mrcs")
    expect_error(tmp_path / "cut.mrcs", "not a readable MRC file", read_mrc,
                 tmp_path / "cut.mrcs")
    write_mrc(tmp_path / "empty.mrcs", np.zeros((0, 4, 4), np.float32))
    expect_error(tmp_path / "empty.mrcs", "empty MRC", MrcStack, tmp_path / "empty.mrcs")
    expect_error(tmp_path / "empty.mrcs", "empty MRC", read_mrc, tmp_path / "empty.mrcs")
    write_mrc(tmp_path / "rect.mrcs", np.zeros((2, 4, 6), np.float32))
    expect_error(tmp_path / "rect.mrcs", "images are not square (4x6)", MrcStack,
                 tmp_path / "rect.mrcs")
    bad = np.zeros((2, 4, 4), np.float32)
    bad[1, 0, 0] = np.nan
    write_mrc(tmp_path / "nan.mrcs", bad)
    expect_error(tmp_path / "nan.mrcs", "contains NaN or Inf pixels", read_mrc,
                 tmp_path / "nan.mrcs")
    with MrcStack(tmp_path / "nan.mrcs") as s:
        s[0]  # a clean image reads fine
        expect_error(tmp_path / "nan.mrcs", "contains NaN or Inf pixels", s.__getitem__, 1)


def one_warning(record, *phrases: str) -> str:
    """The one InputWarning recorded, holding every phrase (and no newline)."""
    found = [str(w.message) for w in record if issubclass(w.category, InputWarning)]
    assert len(found) == 1, found
    assert all(p in found[0] for p in phrases) and "\n" not in found[0], found[0]
    return found[0]


def test_mrc_non_standard_headers_are_read_with_one_warning(tmp_path):
    """What RELION, cryoDRGN and ASPIRE read (mrcfile only with permissive=True) is read, with
    one warning naming the file and what was non-standard; values are those written."""
    stack = RNG.normal(size=(3, 8, 8)).astype(np.float32)
    good = tmp_path / "good.mrcs"
    write_mrc(good, stack, pixel_size=1.5)
    big = tmp_path / "big.mrcs"
    with mrcfile.new(big) as m:  # a big-endian file
        m.set_data(stack.astype(">f4"))
        m.set_image_stack()
        m.voxel_size = 1.5
    cases = [
        (patched(good, tmp_path / "noid.mrcs", MAP_ID_AT, b"\0\0\0\0"),
         ("noid.mrcs", "map ID string missing")),
        (patched(good, tmp_path / "chimera.mrcs", STAMP_AT, CHIMERA_STAMP),
         ("chimera.mrcs", "machine stamp 0x00 0x00 0x44 0x44 unrecognised, read as "
          "little-endian")),
        # the header's sizes make sense only big-endian: that order is used
        (patched(big, tmp_path / "big_chimera.mrcs", STAMP_AT, CHIMERA_STAMP),
         ("machine stamp 0x00 0x00 0x44 0x44 unrecognised, read as big-endian",)),
        # a stamp that says little-endian on a big-endian file
        (patched(big, tmp_path / "wrong.mrcs", STAMP_AT, bytes([0x44, 0x44, 0, 0])),
         ("says little-endian but the header makes sense only as big-endian",)),
    ]
    both = patched(good, tmp_path / "both.mrcs", MAP_ID_AT, b"\0" * 8)
    cases.append((both, ("map ID string missing; machine stamp 0x00 0x00 0x00 0x00",)))
    for path, phrases in cases:
        with pytest.raises(ValueError):
            mrcfile.open(path).close()  # mrcfile's strict reading refuses it
        with pytest.warns(InputWarning) as record:
            with MrcStack(path) as s:
                assert (s.n, s.size, s.pixel_size) == (3, 8, pytest.approx(1.5))
                np.testing.assert_array_equal(s[0:3], stack)
        one_warning(record, str(path), "non-standard MRC file, read anyway", *phrases)
        # warned once per file: opening it again (as every batch does) says nothing more
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            np.testing.assert_array_equal(read_mrc(path), stack)
            assert read_mrc_header(path).notes


def test_mrc_longer_than_its_header_says_is_read_by_mrcfile_too(tmp_path):
    """The one non-standard case mrcfile's strict reading accepts (with its own warning)."""
    write_mrc(tmp_path / "a.mrcs", np.zeros((2, 4, 4), np.float32))
    (tmp_path / "b.mrcs").write_bytes((tmp_path / "a.mrcs").read_bytes() + b"\0" * 8)
    with pytest.warns(RuntimeWarning, match="8 bytes larger"):
        mrcfile.open(tmp_path / "b.mrcs").close()
    with pytest.warns(InputWarning, match="8 bytes after the data"):
        assert read_mrc(tmp_path / "b.mrcs").shape == (2, 4, 4)


def test_mrc_float16_and_integer_stacks_come_back_float32(tmp_path):
    stack = RNG.normal(size=(4, 6, 6)).astype(np.float32)
    with mrcfile.new(tmp_path / "half.mrcs") as m:
        m.set_data(stack.astype(np.float16))  # MRC mode 12
        m.set_image_stack()
    with mrcfile.open(tmp_path / "half.mrcs") as m:
        assert int(m.header.mode) == 12
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a standard mode: no warning
        with MrcStack(tmp_path / "half.mrcs") as s:
            out = s[0:4]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, stack.astype(np.float16).astype(np.float32))
    assert read_mrc(tmp_path / "half.mrcs").dtype == np.float32
    ints = (RNG.integers(-500, 500, (2, 6, 6))).astype(np.int16)  # mode 1
    write = tmp_path / "ints.mrcs"
    with mrcfile.new(write) as m:
        m.set_data(ints)
    with MrcStack(write) as s:
        np.testing.assert_array_equal(s[0:2], ints.astype(np.float32))


def test_mrc_corrupt_headers_are_refused(tmp_path):
    write_mrc(tmp_path / "ok.mrcs", np.zeros((4, 8, 8), np.float32))
    good = tmp_path / "ok.mrcs"
    size = good.stat().st_size
    cases = {
        "cut.mrcs": (good.read_bytes()[:-1], f"truncated: the header says {size} bytes, the "
                     f"file holds {size - 1}"),
        "short.mrcs": (good.read_bytes()[:500], "500 bytes, shorter than an MRC header"),
        "mode99.mrcs": (patched(good, tmp_path / "x", 12, np.int32(99).tobytes()).read_bytes(),
                        "unknown data mode 99"),
        "mode101.mrcs": (patched(good, tmp_path / "x", 12, np.int32(101).tobytes()).read_bytes(),
                         "unknown data mode 101"),
        "nz.mrcs": (patched(good, tmp_path / "x", 8, np.int32(50).tobytes()).read_bytes(),
                    "truncated: the header says"),
        "ext.mrcs": (patched(good, tmp_path / "x", 92, np.int32(4096).tobytes()).read_bytes(),
                     "truncated: the header says"),
        "neg.mrcs": (patched(good, tmp_path / "x", 0, np.int32(-8).tobytes()).read_bytes(),
                     "bad header: negative size (nx -8"),
    }
    for name, (data, phrase) in cases.items():
        (tmp_path / name).write_bytes(data)
        # damaged as well as non-standard: still refused, the damage named
        chimera = patched(tmp_path / name, tmp_path / f"chimera-{name}", STAMP_AT, CHIMERA_STAMP)
        for path in (tmp_path / name, chimera):
            expect_error(path, f"not a readable MRC file: {phrase}", MrcStack, path)
            expect_error(path, f"not a readable MRC file: {phrase}", read_mrc, path)


def test_write_mrc_failure_leaves_nothing(tmp_path, monkeypatch):
    def broken(self, data):
        raise RuntimeError("disk full")

    monkeypatch.setattr(mrcfile.mrcobject.MrcObject, "set_data", broken)
    with pytest.raises(RuntimeError):
        write_mrc(tmp_path / "s.mrcs", np.zeros((2, 4, 4), np.float32))
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------
# STAR
# --------------------------------------------------------------------------------------------


def test_star_round_trip(tmp_path):
    (tmp_path / "stack.mrcs").write_bytes(b"")
    names = [f"{i + 1:06d}@stack.mrcs" for i in range(4)]
    psi = np.array([0.0, 45.5, 181.0, 359.0])
    ox = np.array([1.5, -2.0, 0.0, 3.25])
    oy = np.array([0.0, 1.0, -1.5, 2.0])
    score = np.array([0.1, 0.2, 0.3, 0.4])
    path = tmp_path / "particles.star"
    write_particles_star(path, names, psi, ox, oy, pixel_size=2.0, image_size=64,
                         extra={"rlnMaxValueProbDistribution": score})
    assert leftovers(tmp_path) == ["particles.star", "stack.mrcs"]
    raw = starfile.read(path)
    assert set(raw) == {"optics", "particles"}
    assert raw["optics"]["rlnOpticsGroupName"][0] == "opticsGroup1"
    assert int(raw["optics"]["rlnImageDimensionality"][0]) == 2
    np.testing.assert_allclose(raw["particles"]["rlnOriginXAngst"], ox * 2.0)

    table = read_particles_star(path)
    assert table.n == 4 and table.pixel_size == 2.0 and table.image_size == 64
    df = table.data
    assert list(df["stack_index"]) == [0, 1, 2, 3]
    assert set(df["stack_path"]) == {str((tmp_path / "stack.mrcs").resolve())}
    np.testing.assert_allclose(df["psi"], psi)
    np.testing.assert_allclose(df["origin_x_px"], ox)
    np.testing.assert_allclose(df["origin_y_px"], oy)
    np.testing.assert_allclose(df["rlnMaxValueProbDistribution"], score)
    check_stacks_exist(table, path)


def test_star_pre31_hand_written(tmp_path, monkeypatch):
    star_dir = tmp_path / "star"
    star_dir.mkdir()
    (star_dir / "beside.mrcs").write_bytes(b"")
    project = tmp_path / "project"
    (project / "Extract").mkdir(parents=True)
    (project / "Extract" / "p.mrcs").write_bytes(b"")
    monkeypatch.chdir(project)  # RELION names stacks relative to the project folder
    path = star_dir / "old.star"
    path.write_text(
        "\ndata_\n\nloop_\n_rlnImageName #1\n_rlnAnglePsi #2\n_rlnOriginX #3\n_rlnOriginY #4\n"
        "_rlnDetectorPixelSize #5\n_rlnMagnification #6\n"
        "3@beside.mrcs 10.0 1.5 -2.0 5.0 50000\n"
        "1@Extract/p.mrcs 20.0 0.5 0.0 5.0 50000\n"
    )
    table = read_particles_star(path)
    df = table.data
    assert table.pixel_size == pytest.approx(1.0) and table.image_size is None
    assert list(df["stack_index"]) == [2, 0]
    assert list(df["stack_path"]) == [
        str((star_dir / "beside.mrcs").resolve()),
        str((project / "Extract" / "p.mrcs").resolve()),
    ]
    np.testing.assert_allclose(df["origin_x_px"], [1.5, 0.5])
    np.testing.assert_allclose(df["origin_y_px"], [-2.0, 0.0])
    np.testing.assert_allclose(df["psi"], [10.0, 20.0])
    check_stacks_exist(table, path)


def test_star_pre31_minimal(tmp_path):
    path = tmp_path / "min.star"
    path.write_text("data_images\nloop_\n_rlnImageName\n1@a.mrcs\n2@a.mrcs\n")
    table = read_particles_star(path)
    assert table.pixel_size is None and table.image_size is None
    assert list(table.data["psi"]) == [0.0, 0.0]
    assert list(table.data["origin_x_px"]) == [0.0, 0.0]
    expect_error(path, "names a missing stack: a.mrcs", check_stacks_exist, table, path)
    path.write_text("data_images\nloop_\n_rlnImageName\n_rlnPixelSize\n1@a.mrcs 1.25\n")
    assert read_particles_star(path).pixel_size == 1.25


def test_star_errors(tmp_path):
    def star(name, text):
        (tmp_path / name).write_text(text)
        return tmp_path / name

    expect_error(tmp_path / "no.star", "no such file", read_particles_star, tmp_path / "no.star")
    p = star("ragged.star", "data_particles\nloop_\n_rlnImageName\n_rlnAnglePsi\n1@a 3 4 5\n")
    expect_error(p, "not a readable STAR file", read_particles_star, p)
    p = star("empty.star", "")
    expect_error(p, "no particles in this STAR file", read_particles_star, p)
    p = star("rows.star", "data_optics\nloop_\n_rlnOpticsGroup\n1\n\n"
             "data_particles\nloop_\n_rlnImageName\n_rlnOpticsGroup\n")
    expect_error(p, "no particles in this STAR file", read_particles_star, p)
    p = star("noname.star", "data_\nloop_\n_rlnAnglePsi\n1.0\n2.0\n")
    expect_error(p, "missing column rlnImageName", read_particles_star, p)
    for value in ("a.mrcs", "0@a.mrcs", "x@a.mrcs", "1@"):
        p = star("bad.star", f"data_\nloop_\n_rlnImageName\n1@a.mrcs\n{value}\n")
        expect_error(p, f"bad rlnImageName '{value}' (expected index@stack)",
                     read_particles_star, p)
    optics = ("data_optics\nloop_\n_rlnOpticsGroup\n_rlnImagePixelSize\n_rlnImageSize\n"
              "1 1.0 64\n2 1.5 64\n\n")
    p = star("sizes.star", "data_optics\nloop_\n_rlnOpticsGroup\n_rlnImageSize\n1 64\n2 96\n\n"
             "data_particles\nloop_\n_rlnImageName\n_rlnOpticsGroup\n1@a.mrcs 1\n2@a.mrcs 2\n")
    expect_error(p, "particles differ in image size (64, 96)", read_particles_star, p)
    p = star("3d.star", "data_optics\nloop_\n_rlnOpticsGroup\n_rlnImageDimensionality\n1 3\n\n"
             "data_particles\nloop_\n_rlnImageName\n_rlnOpticsGroup\n1@a.mrc 1\n")
    expect_error(p, "rlnImageDimensionality 3: expected 2-D particle images",
                 read_particles_star, p)
    p = star("badpix.star", "data_\nloop_\n_rlnImageName\n_rlnPixelSize\n1@a.mrcs 0\n")
    expect_error(p, "bad pixel size 0", read_particles_star, p)
    p = star("group3.star", optics + "data_particles\nloop_\n_rlnImageName\n_rlnOpticsGroup\n"
             "1@a.mrcs 3\n")
    expect_error(p, "rlnOpticsGroup 3 is not in the optics block", read_particles_star, p)
    p = star("nopix.star", "data_\nloop_\n_rlnImageName\n_rlnOriginXAngst\n1@a.mrcs 2.0\n")
    expect_error(p, "no pixel size", read_particles_star, p)


RELION31_TWO_GROUPS = """
# version 30001

data_optics

loop_
_rlnOpticsGroupName #1
_rlnOpticsGroup #2
_rlnMicrographOriginalPixelSize #3
_rlnVoltage #4
_rlnSphericalAberration #5
_rlnAmplitudeContrast #6
_rlnImagePixelSize #7
_rlnImageSize #8
_rlnImageDimensionality #9
opticsGroup1 1 0.62 300.0 2.7 0.1 1.25 8 2
opticsGroup2 2 0.52 300.0 2.7 0.1 1.04 8 2

# version 30001

data_particles

loop_
_rlnCoordinateX #1
_rlnCoordinateY #2
_rlnImageName #3
_rlnMicrographName #4
_rlnOpticsGroup #5
_rlnDefocusU #6
_rlnAnglePsi #7
_rlnOriginXAngst #8
_rlnOriginYAngst #9
100.0 200.0 000001@Extract/job007/a.mrcs MotionCorr/a.mrc 1 12000.0 10.0 2.5 -1.25
300.0 400.0 000002@Extract/job007/a.mrcs MotionCorr/a.mrc 2 13000.0 20.0 2.08 0.0
500.0 600.0 000003@Extract/job007/a.mrcs MotionCorr/a.mrc 1 14000.0 30.0 0.0 1.25
"""

#: as RELION 5 writes it: a general block, bracketed aberration lists, tomography columns
RELION5 = """
# version 50001

data_general

_rlnTomoSubTomosAre2DStacks 1

# version 50001

data_optics

loop_
_rlnOpticsGroupName #1
_rlnOpticsGroup #2
_rlnVoltage #3
_rlnSphericalAberration #4
_rlnAmplitudeContrast #5
_rlnImagePixelSize #6
_rlnImageSize #7
_rlnImageDimensionality #8
_rlnCtfDataAreCtfPremultiplied #9
_rlnOddZernike #10
_rlnEvenZernike #11
opticsGroup1 1 300.0 2.7 0.1 2.0 8 2 0 [0.068,0.098,-1.79,0,0,-1.36] [45.4,-1.5,67.4,14.4,-0.3,-0.5]
opticsGroup2 2 300.0 2.7 0.1 2.0 8 2 0 [0.068,0.098,-1.79,0,0,-1.36] [45.4,-1.5,67.4,14.4,-0.3,-0.5]

# version 50001

data_particles

loop_
_rlnTomoName #1
_rlnTomoParticleName #2
_rlnImageName #3
_rlnOpticsGroup #4
_rlnAnglePsi #5
_rlnOriginXAngst #6
_rlnOriginYAngst #7
_rlnTomoSubtomogramBinning #8
TS_01 TS_01/1 1@tilt.mrcs 1 5.0 2.0 4.0 1.0
TS_01 TS_01/2 2@tilt.mrcs 2 -5.0 -2.0 0.0 1.0
"""


def test_star_relion31_with_optics_groups_of_their_own_pixel_size(tmp_path):
    path = tmp_path / "run_data.star"
    path.write_text(RELION31_TWO_GROUPS)
    table = read_particles_star(path)
    assert table.n == 3 and table.image_size == 8
    np.testing.assert_allclose(table.pixel_sizes, [1.25, 1.04, 1.25])
    assert table.pixel_size == 1.25  # most particles'
    # each particle's origin in its own group's pixels
    np.testing.assert_allclose(table.data["origin_x_px"], [2.0, 2.0, 0.0])
    np.testing.assert_allclose(table.data["origin_y_px"], [-1.0, 0.0, 1.0])
    assert list(table.data["stack_index"]) == [0, 1, 2]
    assert list(table.optics["rlnVoltage"]) == [300.0, 300.0]


def test_star_relion5_extra_blocks_and_columns_are_tolerated(tmp_path):
    path = tmp_path / "particles.star"
    path.write_text(RELION5)
    table = read_particles_star(path)
    assert table.n == 2 and table.pixel_size == 2.0 and table.image_size == 8
    np.testing.assert_allclose(table.data["origin_y_px"], [2.0, 0.0])
    np.testing.assert_allclose(table.data["psi"], [5.0, -5.0])
    assert list(table.data["rlnTomoName"]) == ["TS_01", "TS_01"]
    assert set(table.data["stack_path"]) == {str((tmp_path / "tilt.mrcs").resolve())}


def test_star_relion30_with_magnification_per_particle(tmp_path):
    path = tmp_path / "relion30.star"
    path.write_text("data_\nloop_\n_rlnImageName #1\n_rlnDetectorPixelSize #2\n"
                    "_rlnMagnification #3\n_rlnOriginX #4\n"
                    "1@a.mrcs 5.0 50000 1.5\n2@a.mrcs 5.0 40000 -1.0\n3@a.mrcs 5.0 50000 0\n")
    table = read_particles_star(path)
    assert table.optics is None
    np.testing.assert_allclose(table.pixel_sizes, [1.0, 1.25, 1.0])
    assert table.pixel_size == 1.0
    np.testing.assert_allclose(table.data["origin_x_px"], [1.5, -1.0, 0.0])


def test_write_star_with_a_pixel_size_per_particle(tmp_path):
    path = tmp_path / "p.star"
    write_particles_star(path, ["1@a.mrcs", "2@a.mrcs", "3@a.mrcs"], [0.0, 1.0, 2.0],
                         [1.0, 1.0, 1.0], [0.0, 2.0, 0.0], pixel_size=[1.25, 1.04, 1.25],
                         image_size=8)
    raw = starfile.read(path)
    assert list(raw["optics"]["rlnImagePixelSize"]) == [1.04, 1.25]  # a group each
    assert list(raw["particles"]["rlnOpticsGroup"]) == [2, 1, 2]
    np.testing.assert_allclose(raw["particles"]["rlnOriginXAngst"], [1.25, 1.04, 1.25])
    table = read_particles_star(path)
    np.testing.assert_allclose(table.data["origin_x_px"], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(table.data["origin_y_px"], [0.0, 2.0, 0.0])


# --------------------------------------------------------------------------------------------
# cryoSPARC .cs
# --------------------------------------------------------------------------------------------


def test_cs_particles_are_found_from_the_project_folder(tmp_path, monkeypatch):
    """blob/path is relative to the cryoSPARC project folder: found from the .cs file's
    folder or one above it; a leading '>' (an imported path) is dropped."""
    project = tmp_path / "CS-project"
    (project / "J12" / "extract").mkdir(parents=True)
    (project / "J13").mkdir()
    stack = project / "J12" / "extract" / "parts.mrc"
    stack.write_bytes(b"")
    monkeypatch.chdir(tmp_path)  # not where the stacks are named from
    for name in (b"J12/extract/parts.mrc", b">J12/extract/parts.mrc"):
        path = write_cs(project / "J13" / "J13_particles.cs", name, 3, 8,
                        psize=np.array([1.5, 1.5, 1.2], np.float32))
        table = read_particles_cs(path)
        check_stacks_exist(table, path)
        df = table.data
        assert set(df["stack_path"]) == {str(stack.resolve())}
        assert list(df["stack_index"]) == [0, 1, 2]
        assert list(df["rlnImageName"]) == [f"{i}@{name.decode().lstrip('>')}"
                                            for i in (1, 2, 3)]
        np.testing.assert_allclose(table.pixel_sizes, [1.5, 1.5, 1.2], rtol=1e-6)
        assert table.pixel_size == pytest.approx(1.5) and table.image_size == 8
        np.testing.assert_allclose(df["rlnDefocusU"], [15000.0, 15100.0, 15200.0])
        np.testing.assert_allclose(df["rlnDefocusAngle"], 45.0, rtol=1e-6)
        assert (df["origin_x_px"] == 0).all() and "rlnAnglePsi" not in df.columns
        optics = table.optics  # one group per pixel size (with the same CTF optics)
        np.testing.assert_allclose(optics["rlnImagePixelSize"], [1.2, 1.5], rtol=1e-6)
        assert list(df["rlnOpticsGroup"]) == [2, 2, 1]
        assert list(optics["rlnVoltage"]) == [300.0, 300.0]
        np.testing.assert_allclose(optics["rlnSphericalAberration"], 2.7, rtol=1e-6)
        np.testing.assert_allclose(optics["rlnAmplitudeContrast"], 0.1, rtol=1e-6)
    path = write_cs(project / "J13" / "lost.cs", b"J99/gone.mrc", 2, 8, ctf=False)
    table = read_particles_cs(path)
    assert "rlnDefocusU" not in table.data.columns
    expect_error(path, "names a missing stack: J99/gone.mrc", check_stacks_exist, table, path)


def test_cs_errors(tmp_path):
    expect_error(tmp_path / "no.cs", "no such file", read_particles_cs, tmp_path / "no.cs")
    (tmp_path / "text.cs").write_text("uid,blob/path\n")
    expect_error(tmp_path / "text.cs", "not a readable cryoSPARC .cs file: no .npy header",
                 read_particles_cs, tmp_path / "text.cs")
    with open(tmp_path / "objects.cs", "wb") as f:
        np.save(f, np.array([(b"a.mrc", 0)], dtype=[("blob/path", "O"), ("blob/idx", "u4")]),
                allow_pickle=True)
    expect_error(tmp_path / "objects.cs", "not a readable cryoSPARC .cs file", read_particles_cs,
                 tmp_path / "objects.cs")
    with open(tmp_path / "plain.cs", "wb") as f:
        np.save(f, np.zeros((3, 4), np.float32))
    expect_error(tmp_path / "plain.cs", "not a cryoSPARC particle table", read_particles_cs,
                 tmp_path / "plain.cs")
    with open(tmp_path / "noidx.cs", "wb") as f:
        np.save(f, np.zeros(2, dtype=[("blob/path", "S5")]))
    expect_error(tmp_path / "noidx.cs", "missing field blob/idx", read_particles_cs,
                 tmp_path / "noidx.cs")
    empty = write_cs(tmp_path / "empty.cs", b"a.mrc", 0, 8)
    expect_error(empty, "no particles in this .cs file", read_particles_cs, empty)
    bad = write_cs(tmp_path / "psize.cs", b"a.mrc", 2, 8, psize=0.0)
    expect_error(bad, "bad pixel size 0", read_particles_cs, bad)
    arr = np.load(write_cs(tmp_path / "x.cs", b"a.mrc", 2, 8))
    arr["blob/shape"][1] = (8, 10)
    with open(tmp_path / "shapes.cs", "wb") as f:
        np.save(f, arr)
    expect_error(tmp_path / "shapes.cs", "particles differ in image size (8x8, 8x10)",
                 read_particles_cs, tmp_path / "shapes.cs")


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


def test_write_star_failure_leaves_nothing(tmp_path, monkeypatch):
    def broken(data, filename, **kwargs):
        Path(filename).write_text("data_optics\n")
        raise RuntimeError("disk full")

    monkeypatch.setattr(io.starfile, "write", broken)
    with pytest.raises(RuntimeError):
        write_particles_star(tmp_path / "p.star", ["1@a.mrcs"], [0.0], [0.0], [0.0], 1.0, 8)
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------
# Pairs
# --------------------------------------------------------------------------------------------


def make_pairs(n: int = 3, size: int = 8, truth: bool = True) -> Pairs:
    a = RNG.normal(size=(n, size, size)).astype(np.float32)
    b = RNG.normal(size=(n, size, size)).astype(np.float32)
    if not truth:
        return Pairs(a, b)
    return Pairs(a, b, angle=RNG.uniform(0, 360, n), tx=RNG.uniform(-5, 5, n),
                 ty=RNG.uniform(-5, 5, n), meta={"generator": "test", "seed": 0})


def test_pairs_round_trip(tmp_path):
    pairs = make_pairs()
    path = tmp_path / "pairs.npz"
    write_pairs(path, pairs)
    assert leftovers(tmp_path) == ["pairs.npz"]
    got = read_pairs(path)
    assert (got.n, got.size, got.has_truth) == (3, 8, True)
    assert got.a.dtype == np.float32
    np.testing.assert_array_equal(got.a, pairs.a)
    np.testing.assert_array_equal(got.b, pairs.b)
    for key in ("angle", "tx", "ty"):
        np.testing.assert_allclose(getattr(got, key), getattr(pairs, key))
    assert got.meta == {"generator": "test", "seed": 0}
    with np.load(path) as npz:
        assert npz["meta"].ndim == 0


def test_pairs_without_truth_and_angle_only(tmp_path):
    path = tmp_path / "p.npz"
    write_pairs(path, make_pairs(truth=False))
    got = read_pairs(path)
    assert not got.has_truth and got.tx is None and got.meta == {}
    # float64 images are cast; tx, ty default to 0 when only angle is stored.
    a = RNG.normal(size=(2, 4, 4))
    np.savez(path, a=a, b=a, angle=np.array([10.0, 20.0]))
    got = read_pairs(path)
    assert got.a.dtype == np.float32 and got.has_truth
    np.testing.assert_array_equal(got.tx, [0.0, 0.0])
    np.testing.assert_array_equal(got.ty, [0.0, 0.0])
    # A pairs file written to a name without the .npz suffix stays under that name.
    write_pairs(tmp_path / "plain", got)
    assert read_pairs(tmp_path / "plain").n == 2


def test_pairs_errors(tmp_path):
    path = tmp_path / "p.npz"
    a = np.zeros((2, 4, 4), np.float32)

    def check(phrase, **arrays):
        np.savez(path, **arrays)
        expect_error(path, phrase, read_pairs, path)

    expect_error(tmp_path / "no.npz", "no such file", read_pairs, tmp_path / "no.npz")
    (tmp_path / "junk.npz").write_bytes(RNG.bytes(100))
    expect_error(tmp_path / "junk.npz", "not a readable pairs .npz", read_pairs,
                 tmp_path / "junk.npz")
    np.save(tmp_path / "x.npy", a)
    expect_error(tmp_path / "x.npy", "not a readable pairs .npz", read_pairs, tmp_path / "x.npy")
    check("missing array 'a'", b=a)
    check("missing array 'b'", a=a)
    check("not floating point", a=a.astype(np.uint8), b=a)
    check("must have shape (n, N, N)", a=a[0], b=a[0])
    check("a and b differ in shape: (2, 4, 4) vs (3, 4, 4)", a=a, b=np.zeros((3, 4, 4)))
    check("images are not square (4x5)", a=np.zeros((2, 4, 5)), b=np.zeros((2, 4, 5)))
    check("no pairs", a=np.zeros((0, 4, 4)), b=np.zeros((0, 4, 4)))
    nan = a.copy()
    nan[1, 2, 3] = np.nan
    check("contains NaN or Inf pixels in 'b'", a=a, b=nan)
    check("has 'tx' but no 'angle'", a=a, b=a, tx=np.zeros(2))
    check("truth 'angle' has shape (3,), expected (2,)", a=a, b=a, angle=np.zeros(3))
    check("contains NaN or Inf values in 'ty'", a=a, b=a, angle=np.zeros(2),
          ty=np.array([0, np.inf]))
    check("bad JSON in 'meta'", a=a, b=a, meta=np.array("{not json"))
    check("'meta' is not a JSON object", a=a, b=a, meta=np.array("[1, 2]"))


def test_write_pairs_failure_leaves_nothing(tmp_path, monkeypatch):
    def broken(file, **arrays):
        file.write(b"PK partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(io.np, "savez", broken)
    with pytest.raises(RuntimeError):
        write_pairs(tmp_path / "p.npz", make_pairs())
    assert leftovers(tmp_path) == []


def test_write_pairs_rejects_bad_pairs(tmp_path):
    bad = make_pairs()
    bad.b = bad.b[:2]
    expect_error(tmp_path / "p.npz", "a and b differ in shape", write_pairs,
                 tmp_path / "p.npz", bad)
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------
# Estimates
# --------------------------------------------------------------------------------------------


def test_estimates_round_trip(tmp_path):
    path = tmp_path / "est.csv"
    angle = np.array([-90.0, 360.0, 359.99999999, 45.1234567, -1e-17])
    tx = np.array([1.0, -2.5, 0.0, 3.0, 0.25])
    ty = np.zeros(5)
    write_estimates(path, angle, tx, ty, extra={"score": np.arange(5) / 10})
    lines = path.read_text().splitlines()
    assert lines[0] == "index,angle,tx,ty,score"
    assert lines[1] == "0,270.000000,1.000000,0.000000,0.000000"
    assert len(lines) == 6
    got = read_estimates(path, n=5)
    np.testing.assert_allclose(got["angle"], [270.0, 0.0, 0.0, 45.123457, 0.0])
    assert ((got["angle"] >= 0) & (got["angle"] < 360)).all()
    np.testing.assert_allclose(got["tx"], tx)
    np.testing.assert_allclose(got["score"], np.arange(5) / 10)
    assert list(got["index"]) == [0, 1, 2, 3, 4]
    assert leftovers(tmp_path) == ["est.csv"]


def test_read_estimates_sorts_by_index(tmp_path):
    path = tmp_path / "est.csv"
    path.write_text("index,angle,tx,ty\n2,30,0,0\n0,10,0,0\n1,20,0,0\n")
    got = read_estimates(path)
    assert list(got["index"]) == [0, 1, 2]
    assert list(got["angle"]) == [10.0, 20.0, 30.0]


def test_estimates_errors(tmp_path):
    path = tmp_path / "est.csv"

    def check(text, phrase, n=None):
        path.write_text(text)
        expect_error(path, phrase, read_estimates, path, n=n)

    expect_error(tmp_path / "no.csv", "no such file", read_estimates, tmp_path / "no.csv")
    check("", "not a readable CSV file")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81" * 50)
    expect_error(tmp_path / "bin.csv", "not a readable CSV file", read_estimates,
                 tmp_path / "bin.csv")
    check("index,tx,ty\n0,0,0\n", "missing column 'angle'")
    check("index,angle,tx,ty\n", "has no rows")
    check("index,angle,tx,ty\n0,abc,0,0\n", "column 'angle' is not numeric")
    check("index,angle,tx,ty\n0,1,,0\n", "contains NaN or Inf values in 'tx'")
    check("index,angle,tx,ty\n0,1,0,inf\n", "contains NaN or Inf values in 'ty'")
    check("index,angle,tx,ty\n0,1,0,0\n0,2,0,0\n", "column 'index' is not 0..1, each once")
    check("index,angle,tx,ty\n1,1,0,0\n2,2,0,0\n", "column 'index' is not 0..1, each once")
    check("index,angle,tx,ty\n0,1,0,0\n1,2,0,0\n", "has 2 rows, the pairs file has 7", n=7)


def test_write_estimates_failure_leaves_nothing(tmp_path, monkeypatch):
    def broken(self, path, **kwargs):
        Path(path).write_text("index,angle\n")
        raise RuntimeError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(RuntimeError):
        write_estimates(tmp_path / "est.csv", [0.0], [0.0], [0.0])
    assert leftovers(tmp_path) == []


def test_meta_is_json_string(tmp_path):
    path = tmp_path / "p.npz"
    write_pairs(path, make_pairs(n=1))
    with np.load(path) as npz:
        assert json.loads(str(npz["meta"])) == {"generator": "test", "seed": 0}
