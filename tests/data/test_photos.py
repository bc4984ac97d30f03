"""Synthetic pairs from photographs (udl_align.data.photos): the convention, the noise, the
train/test split and the checks of its inputs."""

import numpy as np
import pytest
from PIL import Image

from udl_align import geometry as g
from udl_align.data.photos import NaturalPairSource, generate_natural_pairs, select_split, split_of
from udl_align.errors import InputError


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """The shared photographs and one small JPEG."""
    from conftest import grey, save_photos

    folder = save_photos(tmp_path_factory.mktemp("photos"))
    Image.fromarray((grey("astronaut")[:200, :300] * 255).astype(np.uint8)).save(
        folder / "astro_small.jpg")
    return folder


def test_pairs_follow_the_convention_and_corners_hold_content(photo_dir):
    batch, meta = generate_natural_pairs(photo_dir, n=12, size=64, max_shift=5, seed=1,
                                         progress=False)
    assert batch.a.shape == batch.b.shape == (12, 64, 64)
    assert np.all((batch.angle >= 0) & (batch.angle < 360))
    assert np.all(np.abs(batch.tx) <= 5) and np.all(batch.tx == np.round(batch.tx))
    inner = g.soft_circular_mask(64, 20) > 0.99
    corner = np.zeros((64, 64), bool)
    corner[:6, :6] = True
    for i in range(12):
        moved = g.apply(batch.a[i], (batch.angle[i], batch.tx[i], batch.ty[i]))
        assert np.abs(moved - batch.b[i])[inner].mean() < 0.1 * batch.b[i].std()
        assert batch.b[i][corner].std() > 0 or batch.b[i][corner].mean() > 0  # no padding
    assert meta["noise"] == "clean" and meta["seed"] == 1 and len(meta["pair_sources"]) == 12


def test_same_seed_same_pairs_and_same_geometry_across_noise(photo_dir):
    kw = dict(n=6, size=64, max_shift=5, seed=3, progress=False)
    b1, _ = generate_natural_pairs(photo_dir, noise="gaussian:0.1", **kw)
    b2, _ = generate_natural_pairs(photo_dir, noise="gaussian:0.1", **kw)
    b3, _ = generate_natural_pairs(photo_dir, noise="saltpepper:0.2", **kw)
    b4, _ = generate_natural_pairs(photo_dir, noise="gaussian:0.1", **{**kw, "seed": 4})
    assert np.array_equal(b1.a, b2.a) and np.array_equal(b1.angle, b2.angle)
    assert np.array_equal(b1.angle, b3.angle) and np.array_equal(b1.tx, b3.tx)
    assert not np.array_equal(b1.angle, b4.angle)


def test_noise_is_independent_in_the_two_images(photo_dir):
    src = NaturalPairSource(photo_dir, size=64, max_shift=5, noise="gaussian:0.1", seed=0)
    batch = src.sample(8, keep_clean=True)
    na, nb = batch.a - batch.clean_a, batch.b - batch.clean_b
    assert abs(np.corrcoef(na.ravel(), nb.ravel())[0, 1]) < 0.05


def test_textureless_patches_are_dropped(tmp_path):
    flat = np.full((300, 300), 128, np.uint8)
    Image.fromarray(flat).save(tmp_path / "flat.png")
    with pytest.raises(InputError, match="textured"):
        NaturalPairSource(tmp_path, size=64, max_shift=5).sample(1)


def test_split_is_by_source_photograph_and_stable(photo_dir):
    paths = sorted(photo_dir.iterdir())
    train = select_split(paths, "train", 50)
    test = select_split(paths, "test", 50)
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(paths)
    assert split_of(paths[0], 50) == split_of(paths[0], 50)
    src = NaturalPairSource(paths, size=64, max_shift=5, split="test", test_percent=50)
    names = set(src.sample(10).source)
    assert names <= {p.name for p in test}


def test_endless_generator_for_training(photo_dir):
    src = NaturalPairSource(photo_dir, size=32, max_shift=3, seed=0)
    stream = src.batches(4)
    first, second = next(stream), next(stream)
    assert first.a.shape == (4, 32, 32) and not np.array_equal(first.a, second.a)


def test_bad_inputs(tmp_path, photo_dir):
    with pytest.raises(InputError, match="no such folder"):
        NaturalPairSource(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no PNG/JPEG/TIFF"):
        NaturalPairSource(tmp_path / "empty")
    with pytest.raises(InputError, match="noise spec"):
        NaturalPairSource(photo_dir, noise="pink:1")
    with pytest.raises(InputError, match="large enough"):
        NaturalPairSource([photo_dir / "astro_small.jpg"], size=256).sample(1)


def test_bad_settings_are_named_in_the_library_s_words(photo_dir):
    """From Python there is no command line: the messages name what is wrong, not a flag."""
    cases = ((lambda: NaturalPairSource(photo_dir, size=4),
              "the patch size must be at least 8 px, got 4"),
             (lambda: NaturalPairSource(photo_dir, max_shift=-1),
              "the largest shift must be >= 0 px, got -1"),
             (lambda: generate_natural_pairs(photo_dir, n=0, progress=False),
              "the number of pairs must be at least 1, got 0"))
    for make, message in cases:
        with pytest.raises(InputError) as info:
            make()
        assert str(info.value) == message


def test_photographs_are_checked_up_front(tmp_path, photo_dir):
    """An unreadable file is named before any pair is drawn; a photograph too small for a
    patch and its turns is left out (astro_small is 200 px, 217 are needed at 128 px)."""
    assert "astro_small.jpg" not in {p.name for p in NaturalPairSource(photo_dir).paths}
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.open(photo_dir / "camera.png").save(bad / "camera.png")
    (bad / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    with pytest.raises(InputError, match="broken.jpg: cannot read image"):
        NaturalPairSource(bad)
    other = "train" if split_of("camera.png") == "test" else "test"
    with pytest.raises(InputError, match=f"is in the '{other}' split .*crc32"):
        NaturalPairSource([photo_dir / "camera.png"], split=other)


def test_linked_sub_folders_are_followed_once(tmp_path, photo_dir):
    from udl_align.io.images import list_images

    root = tmp_path / "root"
    root.mkdir()
    (root / "linked").symlink_to(photo_dir, target_is_directory=True)
    (root / "again").symlink_to(photo_dir, target_is_directory=True)
    (root / "linked_loop").symlink_to(root, target_is_directory=True)
    found = list_images(root)
    assert sorted(p.name for p in found) == sorted(p.name for p in photo_dir.iterdir())
