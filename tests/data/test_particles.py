"""Synthetic cryo-EM particles: SNR, the STAR/MRC they are written to, and the RELION truth."""

import mrcfile
import numpy as np
import pytest
import starfile
from PIL import Image

from conftest import blob_average
from udl_align import geometry as g
from udl_align.data.ctf import ctf, electron_wavelength
from udl_align.data.particles import ParticleSynth, isolate, load_template, measured_snr
from udl_align.errors import InputError


@pytest.fixture
def template_png(tmp_path):
    path = tmp_path / "average.png"
    Image.fromarray((blob_average() * 255).clip(0, 255).astype(np.uint8)).save(path)
    return path


def test_isolate_finds_the_particle_and_zeroes_the_background():
    particle, mask, radius = isolate(blob_average(), max_shift=4)
    assert 12 <= radius <= 28
    assert abs(particle[0, 0]) < 1e-6 and mask[32, 32] == 1.0


@pytest.mark.parametrize("ctf_on", [False, True])
def test_particles_have_the_snr_asked_for(template_png, ctf_on):
    t = load_template(template_png, 64, max_shift=4)
    synth = ParticleSynth(t, snr=0.1, max_shift=4, ctf=ctf_on, seed=3)
    batch = next(synth.chunks(40, keep_clean=True))
    snr = measured_snr(batch.clean, batch.images, batch.masks)
    assert abs(np.mean(snr) - 0.1) < 0.003
    assert batch.images.dtype == np.float32 and batch.images.shape == (40, 64, 64)


def test_snr_over_the_image_is_the_paper_s_and_higher_inside_the_particle(template_png):
    t = load_template(template_png, 64, max_shift=4)
    batch = next(ParticleSynth(t, snr=0.1, max_shift=4, ctf=True, seed=3,
                               snr_over="image").chunks(40, keep_clean=True))
    whole = measured_snr(batch.clean, batch.images, batch.masks)
    assert batch.masks.all() and abs(np.mean(whole) - 0.1) < 0.003
    inside = [g.apply(t.mask, (0.0, x, y), order=1) > 0.5
              for x, y in zip(batch.tx, batch.ty, strict=True)]
    assert np.mean(measured_snr(batch.clean, batch.images, np.stack(inside))) > 0.15


def test_bad_settings_are_named_in_the_library_s_words(template_png):
    """From Python there is no command line: the messages name what is wrong, not a flag."""
    t = load_template(template_png, 64, max_shift=4)
    for options, message in (({"snr": [1.0, 0.0]}, "the SNR must be positive, got [1.0, 0.0]"),
                             ({"max_shift": -2}, "the largest shift must be >= 0 px, got -2"),
                             ({"background": -0.5},
                              "the background level must be >= 0, got -0.5"),
                             ({"snr_over": "box"}, "the SNR is measured over one of particle, "
                              "image, got 'box'")):
        with pytest.raises(InputError) as info:
            ParticleSynth(t, **options)
        assert str(info.value) == message


def test_a_mixed_stack_gives_each_particle_its_snr_in_turn(template_png):
    t = load_template(template_png, 64, max_shift=4)
    synth = ParticleSynth(t, snr=[10.0, 0.1], max_shift=4, seed=3)
    chunks = list(synth.chunks(41, chunk=15, keep_clean=True))  # the turn runs across chunks
    clean, noisy, masks = (np.concatenate([getattr(c, f) for c in chunks])
                           for f in ("clean", "images", "masks"))
    snr = measured_snr(clean, noisy, masks)
    assert abs(np.mean(snr[0::2]) - 10.0) < 0.5 and abs(np.mean(snr[1::2]) - 0.1) < 0.005


def test_truth_takes_the_reference_onto_the_particle(template_png):
    t = load_template(template_png, 64, max_shift=4)
    synth = ParticleSynth(t, snr=1e6, max_shift=4, background=0.0, seed=1)
    batch = next(synth.chunks(5))
    for i in range(5):
        moved = g.apply(t.reference, (batch.angle[i], batch.tx[i], batch.ty[i]))
        assert np.abs(moved - batch.images[i]).max() < 0.01 * np.abs(moved).max()


def test_ctf_physics():
    assert electron_wavelength(300) == pytest.approx(0.019687, rel=1e-4)
    # no Cs, no amplitude contrast: the first zero sits where pi * lambda * dz * k^2 = pi
    h = ctf(256, 1.0, 1.0, cs_mm=0.0, amplitude_contrast=0.0)[0]
    k = np.fft.rfftfreq(256, 1.0)
    crossing = np.nonzero(np.sign(h[2:]) != np.sign(h[1:-1]))[0][0] + 1  # chi passes pi
    first_zero = 0.5 * (k[crossing] + k[crossing + 1])
    assert first_zero == pytest.approx(1 / np.sqrt(electron_wavelength(300) * 1e4), rel=0.05)


def test_synth_cryoem_writes_stack_reference_and_relion_star(template_png, tmp_path):
    from udl_align.cli import main

    out = tmp_path / "parts.mrcs"
    assert main(["synth", "cryoem", "--template", str(template_png), "--out", str(out), "--n",
                 "7", "--size", "64", "--max-shift", "4", "--ctf", "--pixel-size", "1.5",
                 "--quiet"]) == 0
    with mrcfile.open(out) as mrc:
        assert mrc.data.shape == (7, 64, 64) and mrc.is_image_stack()
        assert mrc.voxel_size.x == pytest.approx(1.5)
        stack = np.array(mrc.data)
    with mrcfile.open(tmp_path / "parts_reference.mrc") as mrc:
        assert mrc.data.shape == (64, 64) and mrc.voxel_size.x == pytest.approx(1.5)
    star = starfile.read(tmp_path / "parts.star")
    optics, particles = star["optics"], star["particles"]
    assert optics["rlnImagePixelSize"][0] == pytest.approx(1.5)
    assert list(particles["rlnImageName"]) == [f"{i}@parts.mrcs" for i in range(1, 8)]
    # the same particles, made again in memory: the STAR holds their truth in RELION's sense
    t = load_template(template_png, 64, 1.5, 4, seed=0)
    batch = next(ParticleSynth(t, max_shift=4, ctf=True, seed=0).chunks(7))
    assert np.allclose(stack, batch.images, atol=1e-5)
    truth = g.from_relion(particles["rlnAnglePsi"], particles["rlnOriginXAngst"] / 1.5,
                          particles["rlnOriginYAngst"] / 1.5)
    assert np.allclose(g.angle_difference(truth.angle, batch.angle), 0, atol=1e-4)
    assert np.allclose(truth.tx, batch.tx) and np.allclose(truth.ty, batch.ty)
    assert np.allclose(particles["rlnDefocusU"], batch.defocus_um * 1e4)


def test_a_map_is_projected(tmp_path):
    from udl_align.io.mrc import write_mrc

    vol = np.zeros((32, 32, 32), np.float32)
    vol[10:20, 12:18, 14:24] = 1.0
    write_mrc(tmp_path / "map.mrc", vol, pixel_size=3.0, stack=False)
    t = load_template(tmp_path / "map.mrc", 32, max_shift=2, seed=5)
    assert t.reference.shape == (32, 32) and t.pixel_size == pytest.approx(3.0)
    assert len(t.info["projection"]["euler_zyz_deg"]) == 3


def test_bad_templates_give_one_line_and_no_output(tmp_path, capsys):
    from udl_align.cli import main

    wide = tmp_path / "wide.png"
    Image.fromarray(np.zeros((20, 30), np.uint8) + 7).save(wide)
    flat = tmp_path / "flat.png"
    Image.fromarray(np.zeros((30, 30), np.uint8) + 7).save(flat)
    for template, phrase in ((wide, "not a square"), (flat, "blank"),
                             (tmp_path / "none.png", "no such file")):
        out = tmp_path / "o.mrcs"
        assert main(["synth", "cryoem", "--template", str(template), "--out", str(out), "--n",
                     "3", "--size", "32", "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and phrase in err[0], err
        assert not list(tmp_path.glob("o*")) and not list(tmp_path.glob(".o*"))
