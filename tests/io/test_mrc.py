"""udl_align.io.mrc: MRC round trips, non-standard headers read with one warning, and
every validation error."""

from __future__ import annotations

import warnings

import mrcfile
import numpy as np
import pytest

from checks import expect_error, leftovers
from conftest import CHIMERA_STAMP, MAP_ID_AT, STAMP_AT, patched
from udl_align.errors import InputWarning
from udl_align.io.mrc import MrcStack, read_mrc, read_mrc_header, write_mrc

RNG = np.random.default_rng(0)


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
