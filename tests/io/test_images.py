"""udl_align.io.images: photographs and .npy stacks, and every validation error."""

from __future__ import annotations

import numpy as np
from PIL import Image

from checks import expect_error
from udl_align.io.images import list_images, read_image, read_npy

RNG = np.random.default_rng(0)


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
