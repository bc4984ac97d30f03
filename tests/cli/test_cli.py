"""End-to-end runs of the ``udl-align`` command, and its bad-input contract (one line, exit 2,
no partial output)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "udl_align", *args], capture_output=True,
                          text=True, cwd=cwd)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from conftest import grey

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee"):
        Image.fromarray((grey(name) * 255).astype(np.uint8)).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def pairs_file(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs") / "p.npz"
    res = run("synth", "natural", "--images", str(photos), "--out", str(out), "--n", "6",
              "--size", "64", "--max-shift", "5", "--noise", "gaussian:0.5", "--seed", "1")
    assert res.returncode == 0, res.stderr
    return out


def test_synth_align_evaluate_chain(pairs_file, tmp_path):
    with np.load(pairs_file) as z:
        assert z["a"].shape == (6, 64, 64) and z["angle"].shape == (6,)
        assert json.loads(str(z["meta"]))["noise"] == "gaussian:0.5"
    for method in ("bruteforce", "fourier-mellin", "emaf"):
        est = tmp_path / f"{method}.csv"
        res = run("align", "--pairs", str(pairs_file), "--method", method, "--out", str(est))
        assert res.returncode == 0, res.stderr
        header = est.read_text().splitlines()[0]
        assert header.startswith("index,angle,tx,ty")
    js = tmp_path / "scores.json"
    res = run("evaluate", "--pairs", str(pairs_file), "--estimates",
              str(tmp_path / "bruteforce.csv"), str(tmp_path / "emaf.csv"), "--json", str(js))
    assert res.returncode == 0, res.stderr
    assert "pairs/s" in res.stdout and "mean" in res.stdout
    scores = json.loads(js.read_text())["results"]
    assert scores[str(tmp_path / "bruteforce.csv")]["median_deg"] < 2.0


def one_line_exit_2(res: subprocess.CompletedProcess, phrase: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and phrase in lines[0], res.stderr


def test_bad_input_table(photos, pairs_file, tmp_path):
    out = tmp_path / "out.npz"
    one_line_exit_2(run("synth", "natural", "--images", str(tmp_path / "nope"), "--out",
                        str(out)), "no such folder")
    (tmp_path / "empty").mkdir()
    one_line_exit_2(run("synth", "natural", "--images", str(tmp_path / "empty"), "--out",
                        str(out)), "no PNG/JPEG/TIFF")
    one_line_exit_2(run("synth", "natural", "--images", str(photos), "--out", str(out),
                        "--noise", "gaussian:x"), "noise spec")
    assert not out.exists()

    est = tmp_path / "e.csv"
    bad = tmp_path / "nan.npz"
    with np.load(pairs_file) as z:
        a, b = z["a"].copy(), z["b"].copy()
    a[0, 3, 3] = np.nan
    np.savez(bad, a=a, b=b)
    one_line_exit_2(run("align", "--pairs", str(bad), "--method", "bruteforce", "--out",
                        str(est)), "NaN")
    mismatched = tmp_path / "mismatch.npz"
    np.savez(mismatched, a=b, b=b[:, :60, :60])
    one_line_exit_2(run("align", "--pairs", str(mismatched), "--method", "emaf", "--out",
                        str(est)), "differ in shape")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file at all")
    one_line_exit_2(run("align", "--pairs", str(corrupt), "--method", "emaf", "--out",
                        str(est)), "corrupt.npz")
    one_line_exit_2(run("align", "--pairs", str(pairs_file), "--method", "emaf", "--out",
                        str(tmp_path / "no_dir" / "e.csv")), "does not exist")
    assert not est.exists()
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]

    one_line_exit_2(run("align", "--pairs", str(pairs_file), "--method", "magic", "--out",
                        str(est)), "invalid choice")


def test_evaluate_rejects_wrong_row_count(pairs_file, tmp_path):
    est = tmp_path / "short.csv"
    est.write_text("index,angle,tx,ty\n0,1.0,0,0\n")
    one_line_exit_2(run("evaluate", "--pairs", str(pairs_file), "--estimates", str(est)),
                    "rows")


def test_demo_runs_on_embedded_defaults(tmp_path, capsys):
    from udl_align.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--n", "2", "--quiet", "--out-dir", str(out)]) == 0
    for name in ("comparison.png", "accuracy_vs_time.png", "examples_gaussian0.1.png",
                 "results.json"):
        assert (out / name).stat().st_size > 0, name
    text = capsys.readouterr().out
    assert "network+refine" in text and "bruteforce" in text
