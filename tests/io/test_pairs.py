"""udl_align.io.pairs: pairs and estimates files, round trips and every validation
error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from checks import expect_error, leftovers
from udl_align.io import pairs as pairs_io
from udl_align.io.pairs import Pairs, read_estimates, read_pairs, write_estimates, write_pairs

RNG = np.random.default_rng(0)


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

    monkeypatch.setattr(pairs_io.np, "savez", broken)
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
