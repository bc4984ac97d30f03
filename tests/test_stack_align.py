"""align --stack: a particle stack against a reference, RELION STAR / aligned stack / average."""

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
from PIL import Image

from conftest import blob_average
from udl_align import geometry as g
from udl_align.cli import main


@pytest.fixture
def stack(tmp_path, request):
    """12 particles of 48 px at SNR 10 with their truth (STAR) and reference (with |CTF|
    when the test is marked ``ctf``)."""
    ctf = ["--ctf"] if request.node.get_closest_marker("ctf") else []
    png = tmp_path / "average.png"
    Image.fromarray((blob_average(48) * 255).clip(0, 255).astype(np.uint8)).save(png)
    out = tmp_path / "parts.mrcs"
    assert main(["synth", "cryoem", "--template", str(png), "--out", str(out), "--n", "12",
                 "--size", "48", "--max-shift", "3", "--snr", "10", *ctf, "--background", "0",
                 "--pixel-size",
                 "2.5", "--quiet"]) == 0
    return out


def run_align(source, reference, out_dir, *extra):
    return main(["align", "--stack", str(source), "--reference", str(reference), "--out-dir",
                 str(out_dir), "--method", "bruteforce", "--max-shift", "3", "--quiet", *extra])


def assert_names_lead_to(star, stack, indices):
    """The output STAR's rlnImageName resolve, from another folder, to ``stack``'s images."""
    import os

    from udl_align.stacks import open_particles

    here = os.getcwd()
    try:
        os.chdir(star.parent.parent.parent)  # neither the STAR's folder nor the stack's
        particles = open_particles(star)
    finally:
        os.chdir(here)
    assert {str(p) for p in particles.stack_path} == {str(stack.resolve())}
    assert list(particles.stack_index) == list(indices)


def test_stack_is_aligned_to_its_reference(stack, tmp_path):
    out = tmp_path / "aligned"
    assert run_align(stack, tmp_path / "parts_reference.mrc", out) == 0
    est = starfile.read(out / "particles.star")
    truth = starfile.read(tmp_path / "parts.star")["particles"]
    rows = est["particles"]
    assert_names_lead_to(out / "particles.star", stack, range(12))
    assert est["optics"]["rlnImagePixelSize"][0] == pytest.approx(2.5)
    assert g.angle_error(rows["rlnAnglePsi"], truth["rlnAnglePsi"]).max() < 2.0  # measured 1.2
    assert np.abs(rows["rlnOriginXAngst"] - truth["rlnOriginXAngst"]).max() < 2.5  # 1 px
    assert (rows["rlnUdlCorrentropy"] > 0.3).all()
    with mrcfile.open(out / "aligned.mrcs") as m:
        assert m.data.shape == (12, 48, 48)
    with mrcfile.open(out / "average.mrc") as m:
        average = np.array(m.data)
        assert m.voxel_size.x == pytest.approx(2.5)
    with mrcfile.open(tmp_path / "parts_reference.mrc") as m:
        reference = np.array(m.data)
    assert np.corrcoef(average.ravel(), reference.ravel())[0, 1] > 0.9
    assert (out / "average.png").stat().st_size > 0


@pytest.mark.ctf
def test_star_input_keeps_its_columns_and_nan_particles_are_skipped(stack, tmp_path, capsys):
    with mrcfile.open(stack, mode="r+") as m:
        m.data[4, 10, 10] = np.nan
    out = tmp_path / "from_star"
    assert run_align(tmp_path / "parts.star", tmp_path / "parts_reference.mrc", out) == 0
    assert "1 of 12 particles have NaN/Inf pixels" in capsys.readouterr().out
    rows = starfile.read(out / "particles.star")["particles"]
    assert len(rows) == 11
    assert_names_lead_to(out / "particles.star", stack, [i for i in range(12) if i != 4])
    assert "rlnDefocusU" in rows.columns  # the input STAR's own columns are kept
    optics = starfile.read(out / "particles.star")["optics"]
    assert optics["rlnVoltage"][0] == pytest.approx(
        starfile.read(tmp_path / "parts.star")["optics"]["rlnVoltage"][0])
    with mrcfile.open(out / "aligned.mrcs") as m:
        assert m.data.shape[0] == 11


def test_star_names_relative_to_the_current_folder_are_kept(stack, tmp_path, monkeypatch):
    """RELION's convention (stacks named from the project folder) survives align --stack."""
    monkeypatch.chdir(tmp_path)
    assert run_align("parts.star", "parts_reference.mrc", "out") == 0
    rows = starfile.read(tmp_path / "out" / "particles.star")["particles"]
    assert list(rows["rlnImageName"]) == [f"{i}@parts.mrcs" for i in range(1, 13)]


def test_bad_stack_input_gives_one_line_and_no_output(stack, tmp_path, capsys):
    small = tmp_path / "small.mrc"
    with mrcfile.new(small) as m:
        m.set_data(np.ones((32, 32), np.float32))
    missing = tmp_path / "missing.star"
    missing.write_text("data_particles\n\nloop_\n_rlnImageName #1\n1@gone.mrcs\n")
    corrupt = tmp_path / "corrupt.mrcs"
    corrupt.write_bytes(b"\x00garbage" * 100)
    oblong = tmp_path / "oblong.mrcs"
    with mrcfile.new(oblong) as m:
        m.set_data(np.ones((3, 32, 48), np.float32))
    no_names = tmp_path / "no_names.star"
    no_names.write_text("data_particles\n\nloop_\n_rlnAnglePsi #1\n10.0\n")
    reference = tmp_path / "parts_reference.mrc"
    cases = ((stack, small, "reference is 32 px but the particles are 48 px"),
             (missing, reference, "names a missing stack: gone.mrcs"),
             (tmp_path / "nope.mrcs", small, "no such file"),
             (corrupt, reference, "not a readable MRC file"),
             (oblong, reference, "images are not square (32x48)"),
             (no_names, reference, "missing column rlnImageName"),
             (stack, oblong, "reference must be one square image"))
    for source, reference, phrase in cases:
        out = tmp_path / "out"
        assert run_align(source, reference, out) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and phrase in err[0], err
        assert not out.exists() or not any(out.iterdir())


def test_reference_free_recovers_the_poses_up_to_one_common_turn(stack, tmp_path):
    import json

    out = tmp_path / "free"
    assert main(["align", "--stack", str(stack), "--out-dir", str(out), "--method",
                 "bruteforce", "--max-shift", "3", "--rounds", "2", "--quiet"]) == 0
    record = json.loads((out / "align.json").read_text())
    assert record["reference"] == "reference-free" and len(record["rounds"]) >= 3
    rows = starfile.read(out / "particles.star")["particles"]
    truth = starfile.read(tmp_path / "parts.star")["particles"]
    # the reference-free frame is the seed particle's: poses agree up to one common angle
    diff = g.angle_difference(rows["rlnAnglePsi"], truth["rlnAnglePsi"])
    off = g.angle_error(diff, g.circular_mean(diff))
    assert np.median(off) < 1.5 and off.max() < 10.0  # measured 0.6 and 7.4 (12 particles)


def test_two_processes_under_torchrun_write_what_one_writes(stack, tmp_path):
    """Each process aligns its slice of the stack; rank 0 merges the parts in input order."""
    import os
    import subprocess
    import sys

    reference = tmp_path / "parts_reference.mrc"
    assert run_align(stack, reference, tmp_path / "one") == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc-per-node", "2", "-m", "udl_align", "align", "--stack", str(stack),
                    "--reference", str(reference), "--out-dir", str(tmp_path / "two"),
                    "--method", "bruteforce", "--max-shift", "3", "--quiet"],
                   env=env, check=True, capture_output=True, timeout=300)
    one = starfile.read(tmp_path / "one" / "particles.star")["particles"]
    two = starfile.read(tmp_path / "two" / "particles.star")["particles"]
    assert list(one["rlnImageName"]) == list(two["rlnImageName"])
    for column in ("rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst", "rlnUdlCorrentropy"):
        assert np.allclose(one[column], two[column], atol=1e-3), column
    for name in ("aligned.mrcs", "average.mrc"):
        with mrcfile.open(tmp_path / "one" / name) as a, mrcfile.open(tmp_path / "two" / name) as b:
            assert np.allclose(a.data, b.data, atol=1e-4) and a.voxel_size.x == b.voxel_size.x
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir())  # no parts left behind


def test_reading_ahead_with_workers_changes_nothing(stack, tmp_path):
    from udl_align.stacks import open_particles

    particles = open_particles(stack)
    plain = list(particles.batches(5))
    ahead = list(particles.batches(5, workers=2))
    assert [s for s, _, _ in plain] == [s for s, _, _ in ahead] == [0, 5, 10]
    for (_, x, fx), (_, y, fy) in zip(plain, ahead, strict=True):
        assert np.array_equal(x, y) and np.array_equal(fx, fy)
    reference = tmp_path / "parts_reference.mrc"
    assert run_align(stack, reference, tmp_path / "a") == 0
    assert run_align(stack, reference, tmp_path / "b", "--num-workers", "2",
                     "--batch-size", "4") == 0
    a = starfile.read(tmp_path / "a" / "particles.star")["particles"]
    b = starfile.read(tmp_path / "b" / "particles.star")["particles"]
    assert np.allclose(a["rlnAnglePsi"], b["rlnAnglePsi"], atol=1e-6)


def test_a_killed_alignment_resumes_to_the_same_outputs(tmp_path):
    """SIGKILL a real ``align --stack`` mid-run, then ``--resume``: the outputs equal those of a
    run that was never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    png = tmp_path / "average.png"
    Image.fromarray((blob_average(48) * 255).clip(0, 255).astype(np.uint8)).save(png)
    assert main(["synth", "cryoem", "--template", str(png), "--out", str(tmp_path / "p.mrcs"),
                 "--n", "240", "--size", "48", "--max-shift", "3", "--snr", "1",
                 "--quiet"]) == 0

    def command(out, *extra):
        return [sys.executable, "-m", "udl_align", "align", "--stack", str(tmp_path / "p.mrcs"),
                "--reference", str(tmp_path / "p_reference.mrc"), "--out-dir", str(out),
                "--method", "bruteforce", "--max-shift", "3", "--batch-size", "8",
                "--save-every", "1", "--quiet", *extra]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command(tmp_path / "straight"), env=env, check=True, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state = killed / ".partial" / "state.npz"
    deadline = time.time() + 120
    while time.time() < deadline:
        if state.exists():
            with np.load(state) as z:
                if int(z["written"]) >= 40:
                    break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "particles.star").exists()
    out = subprocess.run(command(killed, "--resume"), env=env, check=True, capture_output=True,
                         text=True)
    assert "resuming after" in out.stdout + out.stderr
    a = starfile.read(tmp_path / "straight" / "particles.star")["particles"]
    b = starfile.read(killed / "particles.star")["particles"]
    assert list(a["rlnImageName"]) == list(b["rlnImageName"])
    for column in ("rlnAnglePsi", "rlnOriginXAngst", "rlnUdlCorrentropy"):
        assert np.allclose(a[column], b[column], atol=1e-6), column
    for name in ("aligned.mrcs", "average.mrc"):
        with mrcfile.open(tmp_path / "straight" / name) as x, mrcfile.open(killed / name) as y:
            assert np.allclose(x.data, y.data, atol=1e-5), name
            assert x.header.rms == pytest.approx(float(y.header.rms), rel=1e-4)
    assert not (killed / ".partial").exists()


def test_several_optics_groups_are_kept(stack, tmp_path):
    blocks = starfile.read(tmp_path / "parts.star")
    optics = blocks["optics"]
    second = optics.copy()
    second["rlnOpticsGroup"], second["rlnOpticsGroupName"] = 2, "opticsGroup2"
    blocks["optics"] = pd.concat([optics, second], ignore_index=True)
    blocks["particles"]["rlnOpticsGroup"] = [1 + i % 2 for i in range(12)]
    starfile.write(blocks, tmp_path / "groups.star")
    out = tmp_path / "groups"
    assert run_align(tmp_path / "groups.star", tmp_path / "parts_reference.mrc", out) == 0
    written = starfile.read(out / "particles.star")
    assert list(written["optics"]["rlnOpticsGroup"]) == [1, 2]
    assert list(written["particles"]["rlnOpticsGroup"]) == [1 + i % 2 for i in range(12)]
