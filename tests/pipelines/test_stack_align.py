"""align --stack: a particle stack against a reference, RELION STAR / aligned stack / average."""

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
from PIL import Image

from conftest import CHIMERA_STAMP, MAP_ID_AT, STAMP_AT, blob_average, patched, write_cs
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

    from udl_align.data.stacks import open_particles

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
    from udl_align.data.stacks import open_particles

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



# --------------------------------------------------------------------------------------------
# Every kind of particle file the field's tools write, end to end through the command
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """4 particles of 32 px (2 A/px) with their reference, and the outputs of aligning the plain
    .mrcs (what every other kind of input must reproduce)."""
    d = tmp_path_factory.mktemp("tiny")
    png = d / "average.png"
    Image.fromarray((blob_average(32) * 255).clip(0, 255).astype(np.uint8)).save(png)
    assert main(["synth", "cryoem", "--template", str(png), "--out", str(d / "parts.mrcs"),
                 "--n", "4", "--size", "32", "--max-shift", "2", "--snr", "10",
                 "--pixel-size", "2.0", "--quiet"]) == 0
    assert align_tiny(d / "parts.mrcs", d, d / "plain") == 0
    return d


def align_tiny(source, tiny_dir, out, *extra):
    return main(["align", "--stack", str(source), "--reference",
                 str(tiny_dir / "parts_reference.mrc"), "--out-dir", str(out), "--method",
                 "bruteforce", "--max-shift", "2", "--angle-step", "4", "--quiet", *extra])


def tiny_images(tiny_dir) -> np.ndarray:
    with mrcfile.open(tiny_dir / "parts.mrcs") as m:
        return np.array(m.data)


def star_naming(d, name, text):
    (d / name).write_text(text)
    return d / name


def no_map_id(t, d):
    return patched(t / "parts.mrcs", d / "noid.mrcs", MAP_ID_AT, b"\0\0\0\0")


def chimera_stamp(t, d):
    return patched(t / "parts.mrcs", d / "chimera.mrcs", STAMP_AT, CHIMERA_STAMP)


def float16(t, d):
    with mrcfile.new(d / "half.mrcs") as m:
        m.set_data(tiny_images(t).astype(np.float16))  # MRC mode 12
        m.set_image_stack()
        m.voxel_size = 2.0
    return d / "half.mrcs"


def mrc_stack(t, d):
    """cryoSPARC's kind: a .mrc of nz images, here even marked as a volume."""
    with mrcfile.new(d / "parts.mrc") as m:
        m.set_data(tiny_images(t))
        m.set_volume()
        m.voxel_size = 2.0
    return d / "parts.mrc"


def relion30(t, d):
    no_map_id(t, d)
    rows = "".join(f"{i}@noid.mrcs 5.0 25000\n" for i in range(1, 5))
    return star_naming(d, "relion30.star", "data_\nloop_\n_rlnImageName #1\n"
                       "_rlnDetectorPixelSize #2\n_rlnMagnification #3\n" + rows)


def relion31_two_groups(t, d):
    """Two optics groups with pixel sizes of their own (2.0 and 2.5 A)."""
    mrc_stack(t, d)
    rows = "".join(f"{i}@parts.mrc {1 + (i == 2)} 12000.0\n" for i in range(1, 5))
    return star_naming(d, "run_data.star",
                       "# version 30001\n\ndata_optics\n\nloop_\n_rlnOpticsGroupName #1\n"
                       "_rlnOpticsGroup #2\n_rlnVoltage #3\n_rlnImagePixelSize #4\n"
                       "_rlnImageSize #5\n_rlnImageDimensionality #6\n"
                       "opticsGroup1 1 300.0 2.0 32 2\nopticsGroup2 2 300.0 2.5 32 2\n\n"
                       "# version 30001\n\ndata_particles\n\nloop_\n_rlnImageName #1\n"
                       "_rlnOpticsGroup #2\n_rlnDefocusU #3\n" + rows)


def relion5(t, d):
    chimera_stamp(t, d)
    rows = "".join(f"TS_01 TS_01/{i} {i}@chimera.mrcs {1 + i % 2} 1.0\n" for i in range(1, 5))
    zernike = "[0.068,0.098,-1.79,0,0,-1.36] [45.4,-1.5,67.4,14.4,-0.3,-0.5]"
    return star_naming(d, "particles.star",
                       "# version 50001\n\ndata_general\n\n_rlnTomoSubTomosAre2DStacks 1\n\n"
                       "# version 50001\n\ndata_optics\n\nloop_\n_rlnOpticsGroupName #1\n"
                       "_rlnOpticsGroup #2\n_rlnImagePixelSize #3\n_rlnImageSize #4\n"
                       "_rlnImageDimensionality #5\n_rlnOddZernike #6\n_rlnEvenZernike #7\n"
                       f"opticsGroup1 1 2.0 32 2 {zernike}\nopticsGroup2 2 2.0 32 2 {zernike}\n"
                       "\n# version 50001\n\ndata_particles\n\nloop_\n_rlnTomoName #1\n"
                       "_rlnTomoParticleName #2\n_rlnImageName #3\n_rlnOpticsGroup #4\n"
                       "_rlnTomoSubtomogramBinning #5\n" + rows)


def cryosparc(t, d):
    """A .cs file in its job folder naming a stack of another job by its project path."""
    (d / "P1" / "J12" / "extract").mkdir(parents=True)
    (d / "P1" / "J13").mkdir()
    mrc_stack(t, d).rename(d / "P1" / "J12" / "extract" / "parts.mrc")
    return write_cs(d / "P1" / "J13" / "J13_particles.cs", b">J12/extract/parts.mrc", 4, 32,
                    psize=2.0)


# (id, how to make the input from (tiny, folder), what its one warning line says, if any)
KINDS = [
    ("mrcs without its map ID", no_map_id, "noid.mrcs: non-standard MRC file, read anyway: "
     "map ID string missing"),
    ("mrcs with an old Chimera's machine stamp", chimera_stamp, "chimera.mrcs: non-standard "
     "MRC file, read anyway: machine stamp 0x00 0x00 0x44 0x44 unrecognised, read as "
     "little-endian"),
    ("float16 mrcs (mode 12)", float16, None),
    ("mrc stack (nz > 1)", mrc_stack, None),
    ("RELION 3.0 STAR naming a stack without map ID", relion30, "noid.mrcs: non-standard"),
    ("RELION 3.1 STAR with two optics groups", relion31_two_groups,
     "run_data.star: particles differ in pixel size (2, 2.5 A)"),
    ("RELION 5 STAR", relion5, "chimera.mrcs: non-standard"),
    ("cryoSPARC .cs", cryosparc, None),
]


@pytest.mark.parametrize("name,make,warning", KINDS, ids=[k[0] for k in KINDS])
def test_every_kind_of_particle_file_is_aligned(name, make, warning, tiny, tmp_path, capsys):
    source = make(tiny, tmp_path)
    out = tmp_path / "out"
    capsys.readouterr()
    assert align_tiny(source, tiny, out) == 0
    err = capsys.readouterr().err.strip().splitlines()
    if warning is None:
        assert err == [], err
    else:  # one line, once, however often the file is opened
        assert len(err) == 1 and "udl-align align: warning: " in err[0] and warning in err[0], err
    for output in ("particles.star", "aligned.mrcs", "average.mrc"):
        assert (out / output).is_file(), output
    with mrcfile.open(out / "aligned.mrcs") as m:
        assert m.data.shape == (4, 32, 32)
    # the same images give the same alignment as the plain .mrcs
    rows = starfile.read(out / "particles.star")["particles"]
    plain = starfile.read(tiny / "plain" / "particles.star")["particles"]
    assert len(rows) == 4
    assert g.angle_error(rows["rlnAnglePsi"], plain["rlnAnglePsi"]).max() <= 4.0


def test_pixel_sizes_of_their_own_give_origins_in_their_own_angstrom(tiny, tmp_path):
    """Two optics groups (2.0 and 2.5 A): the same pixel shifts, written in each group's A."""
    assert align_tiny(relion31_two_groups(tiny, tmp_path), tiny, tmp_path / "out") == 0
    written = starfile.read(tmp_path / "out" / "particles.star")
    rows, plain = written["particles"], starfile.read(tiny / "plain" / "particles.star")
    assert list(written["optics"]["rlnImagePixelSize"]) == [2.0, 2.5]
    assert list(rows["rlnOpticsGroup"]) == [1, 2, 1, 1]
    assert "rlnDefocusU" in rows.columns  # the input's own columns are kept
    pixel = np.array([2.0, 2.5, 2.0, 2.0])
    same = np.abs(rows["rlnAnglePsi"] - plain["particles"]["rlnAnglePsi"]) < 1e-6
    assert same.all()
    np.testing.assert_allclose(rows["rlnOriginXAngst"] / pixel,
                               plain["particles"]["rlnOriginXAngst"] / 2.0, atol=1e-5)
    with mrcfile.open(tmp_path / "out" / "average.mrc") as m:
        assert m.voxel_size.x == pytest.approx(2.0)  # most particles'


def test_cs_input_writes_a_relion_star(tiny, tmp_path, monkeypatch):
    source = cryosparc(tiny, tmp_path)
    monkeypatch.chdir(tmp_path)  # the stacks' project path does not lead there from here
    assert align_tiny(source, tiny, tmp_path / "out") == 0
    written = starfile.read(tmp_path / "out" / "particles.star")
    stack = (tmp_path / "P1" / "J12" / "extract" / "parts.mrc").resolve()
    assert list(written["particles"]["rlnImageName"]) == [f"{i}@{stack}" for i in range(1, 5)]
    optics = written["optics"]
    assert optics["rlnImagePixelSize"][0] == pytest.approx(2.0)
    assert optics["rlnVoltage"][0] == 300.0
    assert optics["rlnSphericalAberration"][0] == pytest.approx(2.7)
    assert optics["rlnAmplitudeContrast"][0] == pytest.approx(0.1)
    np.testing.assert_allclose(written["particles"]["rlnDefocusU"],
                               [15000.0, 15100.0, 15200.0, 15300.0])
    assert_names_lead_to(tmp_path / "out" / "particles.star", stack, range(4))


def test_reference_free_warns_once_about_a_non_standard_stack(tiny, tmp_path, capsys):
    source = chimera_stamp(tiny, tmp_path)
    capsys.readouterr()
    assert main(["align", "--stack", str(source), "--out-dir", str(tmp_path / "free"),
                 "--method", "bruteforce", "--max-shift", "2", "--angle-step", "4",
                 "--rounds", "1", "--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "machine stamp 0x00 0x00 0x44 0x44 unrecognised" in err[0], err


# --------------------------------------------------------------------------------------------
# The pipeline from Python
# --------------------------------------------------------------------------------------------


def tiny_pipeline(tiny_dir, out, options, log):
    """What ``align_tiny`` runs, called from Python."""
    from udl_align.aligners import make_aligner
    from udl_align.data.stacks import open_particles
    from udl_align.pipelines.stack_align import align_particles

    aligner = make_aligner("bruteforce", max_shift=2.0, lowpass=0.25, angle_step=4.0)
    return align_particles(open_particles(tiny_dir / "parts.mrcs"), aligner, out,
                           tiny_dir / "parts_reference.mrc", options, log=log)


def test_the_pipeline_from_python_writes_what_the_command_writes(tiny, tmp_path):
    from udl_align.pipelines.stack_align import StackAlignOptions

    said = []
    summary = tiny_pipeline(tiny, tmp_path / "py", StackAlignOptions(batch_size=16,
                                                                     progress=False),
                            said.append)
    assert summary["aligned"] == 4 and summary["skipped"] == 0
    assert summary["reference"] == str(tiny / "parts_reference.mrc")
    assert said == []
    ours = starfile.read(tmp_path / "py" / "particles.star")
    plain = starfile.read(tiny / "plain" / "particles.star")
    for block in ("optics", "particles"):
        pd.testing.assert_frame_equal(ours[block], plain[block])
    for name in ("aligned.mrcs", "average.mrc"):
        with mrcfile.open(tmp_path / "py" / name) as a, mrcfile.open(tiny / "plain" / name) as b:
            assert np.array_equal(a.data, b.data), name


def test_progress_of_another_run_is_not_resumed(tiny, tmp_path):
    """A saved state whose run differs (here: its batch size) is set aside; so is a folder
    without one. The outputs are those of a fresh run and no progress is left."""
    from udl_align.pipelines.aligning import Part
    from udl_align.pipelines.resume import Progress
    from udl_align.pipelines.stack_align import StackAlignOptions

    options = StackAlignOptions(batch_size=2, progress=False, resume=True)
    said = []
    assert tiny_pipeline(tiny, tmp_path / "fresh", options, said.append)["aligned"] == 4
    assert said == ["nothing to resume: starting afresh"]
    out = tmp_path / "other"
    progress = Progress(out / ".partial", {"batch": 3})
    progress.start(Part.empty(4, 32), resume=False)
    progress.stack.write_bytes(b"")
    progress.save(Part.empty(4, 32), 0, 0)
    said.clear()
    assert tiny_pipeline(tiny, out, options, said.append)["aligned"] == 4
    assert said == ["the saved run differs (input, reference, method or batch size): starting "
                    "afresh"]
    assert not (out / ".partial").exists()
    a = starfile.read(out / "particles.star")["particles"]
    b = starfile.read(tmp_path / "fresh" / "particles.star")["particles"]
    pd.testing.assert_frame_equal(a, b)
