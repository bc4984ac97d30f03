"""udl_align.io.particle_files: RELION STAR files (3.0 to 5) and cryoSPARC .cs files in,
RELION 3.1 out, and every validation error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import starfile

from checks import expect_error, leftovers
from conftest import write_cs
from udl_align.io import particle_files
from udl_align.io.particle_files import (
    ParticlePoses,
    check_stacks_exist,
    read_particles_cs,
    read_particles_star,
    write_particles_star,
)

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
    write_particles_star(path, ParticlePoses(names, psi, ox, oy, pixel_size=2.0, image_size=64,
                                             extra={"rlnMaxValueProbDistribution": score}))
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
    write_particles_star(path, ParticlePoses(["1@a.mrcs", "2@a.mrcs", "3@a.mrcs"],
                                             [0.0, 1.0, 2.0], [1.0, 1.0, 1.0], [0.0, 2.0, 0.0],
                                             pixel_size=[1.25, 1.04, 1.25], image_size=8))
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


def test_write_star_failure_leaves_nothing(tmp_path, monkeypatch):
    def broken(data, filename, **kwargs):
        Path(filename).write_text("data_optics\n")
        raise RuntimeError("disk full")

    monkeypatch.setattr(particle_files.starfile, "write", broken)
    with pytest.raises(RuntimeError):
        write_particles_star(tmp_path / "p.star",
                             ParticlePoses(["1@a.mrcs"], [0.0], [0.0], [0.0], 1.0, 8))
    assert leftovers(tmp_path) == []
