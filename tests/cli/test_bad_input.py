"""The bad-input table: every public command, fed each kind of bad input, says so in one line on
stderr, exits with status 2 and leaves no output behind. The README's troubleshooting section
is written from these rows."""

from __future__ import annotations

import errno
import os

import mrcfile
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CHIMERA_STAMP, STAMP_AT, blob_average, patched, write_cs
from udl_align.cli import main


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """Valid inputs the bad cases are made from: pairs, a particle stack with its STAR and
    reference, a PNG template."""
    d = tmp_path_factory.mktemp("good")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 32, 32)).astype(np.float32)
    np.savez(d / "pairs.npz", a=a, b=a.copy(), angle=np.zeros(6), tx=np.zeros(6),
             ty=np.zeros(6))
    png = d / "average.png"
    Image.fromarray((blob_average(32) * 255).clip(0, 255).astype(np.uint8)).save(png)
    assert main(["synth", "cryoem", "--template", str(png), "--out", str(d / "parts.mrcs"),
                 "--n", "24", "--size", "32", "--max-shift", "2", "--quiet"]) == 0
    return d


def mrc(path, data):
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.asarray(data, np.float32))
    return path


def pairs(path, a, b):
    np.savez(path, a=np.asarray(a, np.float32), b=np.asarray(b, np.float32))
    return path


def bad_checkpoint(path):
    """A checkpoint whose weights are those of a 64 px network under a 96 px config."""
    from udl_align.network.checkpoint import CHECKPOINT_FORMAT
    from udl_align.network.models import AlignNet, preset

    cfg = preset("cpu")
    net = cfg.to_dict()
    net["size"] = 96
    torch.save({"format": CHECKPOINT_FORMAT, "net": net, "model": AlignNet(cfg).state_dict(),
                "offset": 0.0}, path)
    return path


def star(path, text):
    path.write_text(text)
    return path


# (id, how to make the argv from (good inputs, scratch dir, output dir), phrase on stderr)
CASES = [
    ("synth natural: folder missing",
     lambda g, t, o: ["synth", "natural", "--images", str(t / "none"), "--out",
                      str(o / "p.npz")], "no such"),
    ("synth natural: folder without images",
     lambda g, t, o: ["synth", "natural", "--images", str(t), "--out", str(o / "p.npz")],
     "no PNG/JPEG/TIFF"),
    ("synth cryoem: corrupt template",
     lambda g, t, o: ["synth", "cryoem", "--template",
                      str(star(t / "bad.png", "not a png")), "--out", str(o / "s.mrcs")],
     "cannot read image"),
    ("synth cryoem: NaN in the template",
     lambda g, t, o: ["synth", "cryoem", "--template",
                      str(mrc(t / "nan.mrc", np.full((32, 32), np.nan))), "--out",
                      str(o / "s.mrcs")], "NaN"),
    ("synth cryoem: --snr not a number list",
     lambda g, t, o: ["synth", "cryoem", "--template", str(g / "average.png"), "--snr", "1,high",
                      "--out", str(o / "s.mrcs")], "comma list"),
    ("synth cryoem: a zero SNR in the list",
     lambda g, t, o: ["synth", "cryoem", "--template", str(g / "average.png"), "--snr", "1,0",
                      "--out", str(o / "s.mrcs")], "must be positive"),
    ("synth natural: --size below 8",
     lambda g, t, o: ["synth", "natural", "--images", str(t), "--size", "4", "--out",
                      str(o / "p.npz")], "--size must be at least 8, got 4"),
    ("synth natural: no pairs",
     lambda g, t, o: ["synth", "natural", "--images", str(t), "--n", "0", "--out",
                      str(o / "p.npz")], "--n must be at least 1, got 0"),
    ("synth cryoem: negative --max-shift",
     lambda g, t, o: ["synth", "cryoem", "--template", str(g / "average.png"), "--max-shift",
                      "-1", "--out", str(o / "s.mrcs")], "--max-shift must be >= 0, got -1"),
    ("synth cryoem: negative --background",
     lambda g, t, o: ["synth", "cryoem", "--template", str(g / "average.png"), "--background",
                      "-1", "--out", str(o / "s.mrcs")], "--background must be >= 0, got -1.0"),
    ("train: corrupt pairs file",
     lambda g, t, o: ["train", "--data", str(star(t / "bad.npz", "garbage")), "--out",
                      str(o / "m.pt"), "--steps", "1"], "not a readable"),
    ("train: truncated pairs file",
     lambda g, t, o: ["train", "--data", str(truncated(g / "pairs.npz", t / "cut.npz")),
                      "--out", str(o / "m.pt"), "--steps", "1"], "not a readable"),
    ("train: NaN pixels in a pairs file",
     lambda g, t, o: ["train", "--data", str(pairs(t / "nan.npz", np.full((4, 32, 32), np.nan),
                                                   np.zeros((4, 32, 32)))),
                      "--out", str(o / "m.pt"), "--steps", "1"], "NaN"),
    ("train: non-square pairs",
     lambda g, t, o: ["train", "--data", str(pairs(t / "ns.npz", np.zeros((4, 32, 48)),
                                                   np.zeros((4, 32, 48)))),
                      "--out", str(o / "m.pt"), "--steps", "1"], "not square"),
    ("train: --init is not a checkpoint",
     lambda g, t, o: ["train", "--data", str(g / "pairs.npz"), "--init",
                      str(star(t / "x.pt", "nope")), "--out", str(o / "m.pt"), "--steps", "1"],
     "not a readable udl-align checkpoint"),
    ("train: a symmetry order below 1",
     lambda g, t, o: ["train", "--data", str(g / "pairs.npz"), "--symmetry", "0",
                      "--out", str(o / "m.pt"), "--steps", "1"], "--symmetry must be"),
    ("train: negative --workers",
     lambda g, t, o: ["train", "--data", str(g / "pairs.npz"), "--workers", "-1",
                      "--out", str(o / "m.pt"), "--steps", "1"], "--workers must be"),
    ("train: STAR names an absent stack",
     lambda g, t, o: ["train", "--data", str(star(t / "gone.star",
                                                  "data_\nloop_\n_rlnImageName #1\n1@gone.mrcs\n")),
                      "--out", str(o / "m.pt"), "--steps", "1"], "names a missing stack"),
    ("align: a and b of different sizes",
     lambda g, t, o: ["align", "--pairs", str(pairs(t / "mm.npz", np.zeros((2, 32, 32)),
                                                    np.zeros((2, 48, 48)))),
                      "--method", "bruteforce", "--out", str(o / "e.csv")], "differ"),
    ("align: 3-D where 2-D images are expected",
     lambda g, t, o: ["align", "--pairs", str(pairs(t / "3d.npz", np.zeros((2, 2, 8, 8)),
                                                    np.zeros((2, 2, 8, 8)))),
                      "--method", "bruteforce", "--out", str(o / "e.csv")], "(n, N, N)"),
    ("align: checkpoint for another image size",
     lambda g, t, o: ["align", "--pairs", str(g / "pairs.npz"), "--model",
                      str(bad_checkpoint(t / "other.pt")), "--out", str(o / "e.csv")],
     "do not fit its network config"),
    ("align: reference of another size",
     lambda g, t, o: ["align", "--stack", str(g / "parts.mrcs"), "--reference",
                      str(mrc(t / "r48.mrc", np.zeros((48, 48)))), "--out-dir", str(o / "d"),
                      "--method", "bruteforce"], "reference is 48 px but the particles are 32"),
    ("align: 3-D reference",
     lambda g, t, o: ["align", "--stack", str(g / "parts.mrcs"), "--reference",
                      str(mrc(t / "r3.mrcs", np.zeros((3, 32, 32)))), "--out-dir",
                      str(o / "d"), "--method", "bruteforce"], "one square image"),
    ("align: NaN pixels in the reference",
     lambda g, t, o: ["align", "--stack", str(g / "parts.mrcs"), "--reference",
                      str(mrc(t / "rn.mrc", np.full((32, 32), np.nan))), "--out-dir",
                      str(o / "d"), "--method", "bruteforce"], "NaN"),
    ("align: empty stack file",
     lambda g, t, o: ["align", "--stack", str(star(t / "empty.mrcs", "")), "--out-dir",
                      str(o / "d"), "--method", "bruteforce"], "not a readable MRC file"),
    ("align: STAR without rlnImageName",
     lambda g, t, o: ["align", "--stack", str(star(t / "nocol.star",
                                                   "data_\nloop_\n_rlnAnglePsi #1\n10.0\n")),
                      "--out-dir", str(o / "d"), "--method", "bruteforce"],
     "missing column rlnImageName"),
    ("align: output folder under a file",
     lambda g, t, o: ["align", "--pairs", str(g / "pairs.npz"), "--method", "bruteforce",
                      "--out", str(star(t / "file", "x") / "e.csv")],
     "output directory is not a folder"),
    ("align: unknown --device",
     lambda g, t, o: ["align", "--pairs", str(g / "pairs.npz"), "--method", "bruteforce",
                      "--device", "gpu", "--out", str(o / "e.csv")], "unknown device 'gpu'"),
    ("train: unknown --device",
     lambda g, t, o: ["train", "--data", str(g / "pairs.npz"), "--device", "gpu",
                      "--out", str(o / "m.pt"), "--steps", "1"], "unknown device 'gpu'"),
    ("align: negative --max-shift",
     lambda g, t, o: ["align", "--pairs", str(g / "pairs.npz"), "--method", "bruteforce",
                      "--max-shift", "-3", "--out", str(o / "e.csv")], "--max-shift must be"),
    ("align: a stack of NaN particles leaves no --out-dir",
     lambda g, t, o: ["align", "--stack", str(mrc(t / "nan.mrcs", np.full((3, 32, 32), np.nan))),
                      "--reference", str(mrc(t / "r.mrc", np.ones((32, 32)))),
                      "--out-dir", str(o / "d"), "--method", "bruteforce"], "NaN"),
    ("align: --out-dir with --pairs",
     lambda g, t, o: ["align", "--pairs", str(g / "pairs.npz"), "--method", "bruteforce",
                      "--out", str(o / "e.csv"), "--out-dir", str(o / "d")], "is for --stack"),
    ("align: --out with --stack",
     lambda g, t, o: ["align", "--stack", str(g / "parts.mrcs"), "--method", "bruteforce",
                      "--out", str(o / "e.csv"), "--out-dir", str(o / "d")], "is for --pairs"),
    ("align: reference-free on a stack of NaN particles",
     lambda g, t, o: ["align", "--stack", str(mrc(t / "nan.mrcs", np.full((3, 32, 32), np.nan))),
                      "--out-dir", str(o / "d"), "--method", "bruteforce"], "NaN/Inf"),
    ("align: truncated stack",
     lambda g, t, o: ["align", "--stack", str(cut(g / "parts.mrcs", t / "cut.mrcs", 100)),
                      "--out-dir", str(o / "d"), "--method", "bruteforce"],
     "not a readable MRC file: truncated"),
    ("align: truncated stack with a non-standard machine stamp",
     lambda g, t, o: ["align", "--stack",
                      str(cut(patched(g / "parts.mrcs", t / "c.mrcs", STAMP_AT, CHIMERA_STAMP),
                              t / "cut.mrcs", 4)),
                      "--out-dir", str(o / "d"), "--method", "bruteforce"],
     "not a readable MRC file: truncated"),
    ("align: stack header with an unknown data mode",
     lambda g, t, o: ["align", "--stack", str(patched(g / "parts.mrcs", t / "m.mrcs", 12,
                                                      np.int32(99).tobytes())),
                      "--out-dir", str(o / "d"), "--method", "bruteforce"],
     "unknown data mode 99"),
    ("align: stack header sizes beyond the file",
     lambda g, t, o: ["align", "--stack", str(patched(g / "parts.mrcs", t / "nz.mrcs", 8,
                                                      np.int32(1000).tobytes())),
                      "--out-dir", str(o / "d"), "--method", "bruteforce"],
     "not a readable MRC file: truncated"),
    ("align: .cs naming a missing stack",
     lambda g, t, o: ["align", "--stack", str(write_cs(t / "p.cs", b"J1/gone.mrc", 2, 32)),
                      "--out-dir", str(o / "d"), "--method", "bruteforce"],
     "names a missing stack: J1/gone.mrc"),
    ("align: .cs that is not a numpy file",
     lambda g, t, o: ["align", "--stack", str(star(t / "p.cs", "uid,blob/path\n")),
                      "--out-dir", str(o / "d"), "--method", "bruteforce"],
     "not a readable cryoSPARC .cs file"),
    ("align: STAR of 3-D particles",
     lambda g, t, o: ["align", "--stack", str(star(t / "sub.star",
                                                   "data_optics\nloop_\n_rlnOpticsGroup\n"
                                                   "_rlnImageDimensionality\n1 3\n\n"
                                                   "data_particles\nloop_\n_rlnImageName\n"
                                                   "_rlnOpticsGroup\n1@sub.mrc 1\n")),
                      "--out-dir", str(o / "d"), "--method", "bruteforce"],
     "rlnImageDimensionality 3"),
    ("align: --out-dir under a file",
     lambda g, t, o: ["align", "--stack", str(g / "parts.mrcs"), "--method", "bruteforce",
                      "--out-dir", str(star(t / "file", "x") / "d")],
     "output directory is not a folder"),
    ("train: truncated particle stack",
     lambda g, t, o: ["train", "--data", str(cut(g / "parts.mrcs", t / "cut.mrcs", 100)),
                      "--out", str(o / "m.pt"), "--steps", "1"],
     "not a readable MRC file: truncated"),
    ("evaluate: estimates without an angle column",
     lambda g, t, o: ["evaluate", "--pairs", str(g / "pairs.npz"), "--estimates",
                      str(star(t / "e.csv", "index,tx,ty\n0,0,0\n"))], "angle"),
]


def cut(src, dst, n):
    """A copy of ``src`` without its last ``n`` bytes."""
    dst.write_bytes(src.read_bytes()[:-n])
    return dst


def truncated(src, dst):
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def run_case(make, good, tmp_path, capsys, monkeypatch=None):
    scratch, out = tmp_path / "scratch", tmp_path / "out"
    scratch.mkdir()
    out.mkdir()
    argv = make(good, scratch, out)
    capsys.readouterr()
    code = main([*argv, "--quiet"] if argv[0] != "evaluate" else argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err, sorted(p.name for p in out.rglob("*"))


@pytest.mark.parametrize("name,make,phrase", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_exit_2_and_no_output(name, make, phrase, good, tmp_path,
                                                       capsys):
    code, err, left = run_case(make, good, tmp_path, capsys)
    assert code == 2, (code, err)
    assert len(err) == 1 and phrase in err[0], err
    assert left == [], left


@pytest.mark.parametrize("argv", [
    lambda g, o: ["align", "--pairs", str(g / "pairs.npz"), "--method", "bruteforce", "--out",
                  str(o / "e.csv")],
    lambda g, o: ["align", "--stack", str(g / "parts.mrcs"), "--reference",
                  str(g / "parts_reference.mrc"), "--out-dir", str(o / "d"), "--method",
                  "fourier-mellin"],
], ids=["align pairs", "align stack"])
def test_a_full_disk_gives_one_line_and_no_partial_output(argv, good, tmp_path, capsys,
                                                          monkeypatch):
    """The disk fills up as the outputs are flushed: simulated by fsync failing with ENOSPC."""
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("udl_align.io.files.os.fsync", full)
    out = tmp_path / "out"
    out.mkdir()
    code = main([*argv(good, out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "No space left on device" in err[0], err
    assert [p for p in out.rglob("*") if p.is_file()] == []


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_an_out_dir_that_cannot_be_made_is_refused_before_any_work(good, tmp_path, capsys,
                                                                     monkeypatch):
    """/proc/x cannot be made: one line, exit 2, before the stack is even opened."""
    from udl_align.data import stacks

    def never(*args, **kwargs):
        raise AssertionError("the stack was read before the output folder was checked")

    monkeypatch.setattr(stacks, "open_particles", never)
    code = main(["align", "--stack", str(good / "parts.mrcs"), "--out-dir", "/proc/udl-x",
                 "--method", "bruteforce", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "/proc/udl-x: cannot make the output folder" in err[0], err
    assert not os.path.exists("/proc/udl-x")
