import numpy as np
import pytest
import torch

from udl_align import geometry as g
from udl_align.aligners import CLASSICAL, BruteForce, Emaf, make_aligner
from udl_align.aligners.correlation import (
    Preprocess,
    cross_spectra,
    fine_peaks,
    ncc_window,
    prepare_reference,
    shift_index,
    window_inverse,
    window_peaks,
)
from udl_align.aligners.guided import GuidedSearch, _one_per_peak, choose
from udl_align.filters import fourier_crop, to_tensor


def errors(est, truth):
    ang = g.angle_error(est.angle, truth[:, 0])
    shift = np.hypot(est.tx - truth[:, 1], est.ty - truth[:, 2])
    return ang, shift


@pytest.mark.parametrize("method", ["bruteforce", "fourier-mellin"])
def test_recovers_known_transforms_on_clean_textured_pairs(textured_pairs, method):
    a, b, truth = textured_pairs
    est = make_aligner(method, max_shift=10).estimate(a, b)
    ang, shift = errors(est, truth)
    assert ang.max() < 0.5, ang
    assert shift.max() < 0.5, shift


def particle_pairs(photo, anisotropy=(38.0, 14.0)):
    """Isolated, elongated textured objects on an empty background (cryo-EM-like), where the
    spectrum orientation that EMAF relies on is well defined."""
    rng = np.random.default_rng(3)
    yy, xx = g.centred_grid(128)
    envelope = np.exp(-(((xx / anisotropy[0]) ** 2 + (yy / anisotropy[1]) ** 2) ** 3))
    angles = [0.3, 90.0, 180.0, 359.5, 45.2, 133.3, 222.2, 310.9]
    a, b, truth = [], [], []
    for ang in angles:
        cy, cx = rng.integers(100, 400, 2)
        patch = photo[cy - 64 : cy + 64, cx - 64 : cx + 64]
        obj = ((patch - patch.mean()) * envelope).astype(np.float32)
        tx, ty = rng.integers(-8, 9, 2).astype(float)
        a.append(obj)
        b.append(g.apply(obj, (ang, tx, ty)))
        truth.append((ang, tx, ty))
    return np.stack(a), np.stack(b), np.array(truth)


@pytest.mark.parametrize("method", sorted(CLASSICAL) + ["reference"])
def test_recovers_known_transforms_on_clean_particles(photo, method):
    a, b, truth = particle_pairs(photo)
    est = make_aligner(method, max_shift=10).estimate(a, b)
    ang, shift = errors(est, truth)
    assert ang.max() < 0.5, ang
    assert shift.max() < 0.5, shift


def test_emaf_is_coarse_on_natural_patches_but_never_flips(textured_pairs):
    # its single spectrum orientation is a weak cue on natural patches; measured, not hidden
    a, b, truth = textured_pairs
    ang, _ = errors(Emaf(max_shift=10).estimate(a, b), truth)
    assert np.median(ang) < 5.0 and ang.max() < 20.0, ang


def test_signs_are_never_flipped(textured_pairs):
    a, b, truth = textured_pairs
    # swapping a and b must give the inverse transform, not the same one
    est = BruteForce(max_shift=10).estimate(b, a)
    inverse = g.invert(g.Rigid.of(truth[:, 0], truth[:, 1], truth[:, 2]))
    assert g.angle_error(est.angle, inverse.angle).max() < 0.5
    assert np.hypot(est.tx - inverse.tx, est.ty - inverse.ty).max() < 0.5


def test_round_trip_apply_estimate(textured_pairs):
    a, b, _ = textured_pairs
    est = BruteForce(max_shift=10).estimate(a, b)
    inner = g.soft_circular_mask(128, 50) > 0.99
    for i in range(len(a)):
        moved = g.apply(a[i], (est.angle[i], est.tx[i], est.ty[i]))
        assert np.abs(moved - b[i])[inner].mean() < 0.05 * b[i].std()


def test_refine_finds_the_angle_near_a_rough_start(textured_pairs):
    a, b, truth = textured_pairs
    start = truth[:, 0] + np.array([2.5, -2.0, 1.0, -2.8, 0.5, 2.9, -1.5, 0.0])
    est = BruteForce(max_shift=10).refine(a, b, start, span=3.0, step=0.25)
    ang, shift = errors(est, truth)
    assert ang.max() < 0.5 and shift.max() < 0.5


@pytest.mark.parametrize("n, s", [(64, 5), (128, 10), (48, 4), (65, 3), (17, 2)])
def test_the_window_of_the_inverse_is_the_whole_inverse_there(n, s):
    spectrum = torch.fft.rfft2(torch.randn(3, 2, n, n, generator=torch.Generator().manual_seed(n)))
    idx = shift_index(n, s)
    whole = torch.fft.irfft2(spectrum, s=(n, n))[..., idx[:, None], idx]
    assert torch.allclose(window_inverse(spectrum, n, s), whole, atol=1e-5)


def test_subpixel_peak_from_fourier_series_beats_parabola(photo):
    big = photo[200:456, 200:456]
    a = big[64:192, 64:192]
    ta = to_tensor(a)
    for tx, ty in [(3.3, -2.7), (0.5, 0.25), (-7.81, 4.44)]:
        b = g.fourier_shift(big, tx, ty)[64:192, 64:192]
        ref = prepare_reference(to_tensor(b), 10)
        cross, energy = cross_spectra(ta[:, None], ref)
        _, px, py = window_peaks(ncc_window(cross, energy, ref))
        score, fx, fy = fine_peaks(cross, energy, ref, px, py)
        assert abs(fx.item() - tx) < 0.03 and abs(fy.item() - ty) < 0.03
        assert score.item() == pytest.approx(1.0, abs=0.01)


def test_low_snr_accuracy_with_prefilter(photo):
    """At SNR 0.1 the exhaustive search still finds textured angles within a few degrees."""
    from udl_align.data.noise import parse_noise

    rng = np.random.default_rng(5)
    from conftest import cut_pair

    a, b, truth = [], [], []
    for _ in range(8):
        cy, cx = rng.integers(140, 370, 2)
        t = (rng.uniform(0, 360), *rng.integers(-8, 9, 2).astype(float))
        pa, pb = cut_pair(photo, int(cy), int(cx), t)
        a.append(pa)
        b.append(pb)
        truth.append(t)
    noise = parse_noise("gaussian:0.1")
    a, b, truth = noise.add(np.stack(a), rng), noise.add(np.stack(b), rng), np.array(truth)
    ang, _ = errors(BruteForce(max_shift=10).estimate(a, b), truth)
    assert np.median(ang) < 3.0, ang


def test_batches_and_single_pairs_agree(textured_pairs):
    a, b, _ = textured_pairs
    al = make_aligner("fourier-mellin", max_shift=10)
    batch = al.estimate(a[:3], b[:3])
    single = al.estimate(a[1], b[1])
    assert g.angle_error(batch.angle[1], single.angle[0]) < 1e-3


def test_rejects_mismatched_shapes():
    al = make_aligner("bruteforce")
    with pytest.raises(ValueError, match="differ in shape"):
        al.estimate(np.zeros((2, 32, 32)), np.zeros((2, 32, 30)))
    with pytest.raises(ValueError, match="unknown method"):
        make_aligner("nope")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(textured_pairs):
    a, b, _ = textured_pairs
    cpu = BruteForce(max_shift=10).estimate(a, b)
    gpu = BruteForce(max_shift=10, device="cuda").estimate(a, b)
    assert g.angle_error(cpu.angle, gpu.angle).max() < 0.05


def guided_inputs(textured_pairs):
    a, b, truth = textured_pairs
    bf = BruteForce(max_shift=10)
    pa, pb = bf.preprocess(torch.from_numpy(a)), bf.preprocess(torch.from_numpy(b))
    return GuidedSearch(10), pa, pb, truth


def test_guided_search_around_a_rough_angle(textured_pairs):
    """The window around a prior a few degrees off (how a network's angle is refined)."""
    search, pa, pb, truth = guided_inputs(textured_pairs)
    rough = torch.tensor(truth[:, 0] + np.array([9.0, -12.0, 4.0, -1.0, 13.5, 0.0, -7.0, 11.0]))
    ang, shift = errors(search(pa, pb, rough.float()), truth)
    assert ang.max() < 0.2 and shift.max() < 0.3


def test_the_window_scored_in_two_parts_finds_what_the_whole_window_finds(textured_pairs):
    """Priors near the truth stop at the inner part; priors whose inner best lies at its edge
    get the rest of the window: both give the whole window's answer."""
    from udl_align.aligners.correlation import prepare_reference
    from udl_align.filters import fourier_crop

    _, pa, pb, truth = guided_inputs(textured_pairs)
    sa, sb = fourier_crop(pa, 64), fourier_crop(pb, 64)
    ref = prepare_reference(sb, 5.0)
    prior = torch.tensor(truth[:, 0] + np.array([1.0, -3.0, 2.5, 12.0, -13.0, 9.5, 0.0, -11.0]))
    whole = GuidedSearch(10, inner_span=None).window(sa, ref, prior.float(), (90.0,))
    parts = GuidedSearch(10, inner_span=8.0).window(sa, ref, prior.float(), (90.0,))
    for w, p in zip(whole, parts, strict=True):
        assert torch.allclose(w.float(), p.float(), atol=1e-4)
    assert g.angle_error(parts[0].numpy(), truth[:, 0]).max() < 1.0


@pytest.mark.parametrize("off", [90.0, 180.0, 270.0])
def test_guided_search_takes_the_whole_circle_when_told_or_when_it_finds_better(textured_pairs,
                                                                               off):
    """A prior a quarter, half or three quarters of a turn off: said to be unsure, every pair
    gets the whole circle; said to be sure, the probes (a quarter or half turn from the
    prior) score the truth higher than the window's best, and every pair gets it too.
    Without them only the pairs whose window peaks at its edge get it: a false peak inside
    the window is not caught."""
    search, pa, pb, truth = guided_inputs(textured_pairs)
    far = torch.tensor(truth[:, 0] + off).float()
    told = search(pa, pb, far, unsure=torch.ones(len(far), dtype=torch.bool))
    assert errors(told, truth)[0].max() < 0.2
    assert errors(search(pa, pb, far), truth)[0].max() < 0.2
    blind = errors(GuidedSearch(10, probes=())(pa, pb, far), truth)[0]
    assert blind.max() > 20.0


def near_two_fold_pairs(textured_pairs):
    """The textured pairs' first images made nearly two-fold symmetric (plus 0.9 of their own
    half turn), each transformed by its true transform into the second image."""
    a, _, truth = textured_pairs
    a = a + 0.9 * np.rot90(a, 2, axes=(-2, -1))
    b = np.stack([g.apply(x, tuple(t)) for x, t in zip(a, truth, strict=True)])
    bf = BruteForce(max_shift=10)
    return bf.preprocess(torch.from_numpy(a)), bf.preprocess(torch.from_numpy(b)), truth


def test_the_whole_circle_tells_apart_the_turns_of_a_near_symmetric_view(textured_pairs):
    """Half the pairs of near two-fold views sent to the whole circle: both turns come back as
    close candidates, are narrowed and told apart at full resolution, and the polish takes
    the winner's scores from there; the same answers for the batch in reverse (each pair's
    scores go to its own row)."""
    pa, pb, truth = near_two_fold_pairs(textured_pairs)
    unsure = torch.tensor(np.arange(len(truth)) % 2 == 0)  # a quarter turn off; the rest near
    far = torch.tensor(truth[:, 0] + np.where(unsure.numpy(), 90.0, 2.0)).float()
    search = GuidedSearch(10)
    found = search(pa, pb, far, unsure=unsure)
    assert errors(found, truth)[0].max() < 0.2
    back = search(pa.flip(0), pb.flip(0), far.flip(0), unsure=unsure.flip(0))
    for field in ("angle", "tx", "ty", "score"):
        np.testing.assert_allclose(getattr(back, field)[::-1], getattr(found, field),
                                   atol=1e-4)


def test_starts_that_climbed_to_the_same_peak_count_once():
    angles = torch.tensor([[10.0, 11.0, 100.0, 359.5, 0.5], [5.0, 5.0, 200.0, 202.0, 50.0]])
    scores = torch.tensor([[0.5, 0.6, 0.55, 0.3, 0.4], [0.5, 0.5, 0.2, 0.1, 0.3]])
    kept = _one_per_peak(angles, scores, 1.5)
    # 10 beside the better 11, 359.5 beside the better 0.5 (across 0), the second of a tie
    assert torch.isinf(kept).tolist() == [[True, False, False, True, False],
                                          [False, True, False, False, False]]
    assert torch.equal(kept[torch.isfinite(kept)], scores[torch.isfinite(kept)])


def test_guided_search_scores_the_turns_of_a_near_symmetric_view(textured_pairs):
    """A near two-fold view and a prior 184 deg off, sure of itself, no probes: with
    ``half_turn`` (a network that confuses the view's turns) the window's best turned by 180
    deg is scored too and wins at full resolution; without it the wrong turn is kept. A prior
    known modulo 180 whose turns look alike (``alike``: a C2 network) is found the same way;
    a batch with one pair off alone (no probes, no half turn) is caught by that pair's low
    score against the batch's."""
    pa, pb, truth = near_two_fold_pairs(textured_pairs)
    far = torch.tensor(truth[:, 0] + 184.0).float()
    assert errors(GuidedSearch(10, probes=(), half_turn=True)(pa, pb, far), truth)[0].max() < 0.2
    assert errors(GuidedSearch(10, probes=())(pa, pb, far), truth)[0].min() > 170.0
    modulo = torch.tensor(truth[:, 0] + 180.0 * (np.arange(len(truth)) % 2) + 4.0).float()
    assert errors(GuidedSearch(10)(pa, pb, modulo, turns=2, alike=True), truth)[0].max() < 0.2
    # the full-resolution stages through another filter (none): the same answers
    a, _, _ = textured_pairs
    a = a + 0.9 * np.rot90(a, 2, axes=(-2, -1))
    b = np.stack([g.apply(x, tuple(t)) for x, t in zip(a, truth, strict=True)])
    unfiltered = tuple(Preprocess(None)(torch.from_numpy(x)) for x in (a, b))
    found = GuidedSearch(10)(pa, pb, modulo, turns=2, alike=True, full=unfiltered)
    assert errors(found, truth)[0].max() < 0.2
    pa, pb, truth = guided_inputs(textured_pairs)[1:]
    one_off = torch.tensor(truth[:, 0] + np.where(np.arange(len(truth)) == 7, 70.0, 2.0)).float()
    blind = GuidedSearch(10, probes=(), low_share=0.0)(pa, pb, one_off)
    checked = GuidedSearch(10, probes=())(pa, pb, one_off)
    assert errors(blind, truth)[0][7] > 20.0
    assert errors(checked, truth)[0].max() < 0.2


def test_close_candidates_are_told_apart_at_full_resolution(textured_pairs):
    """``choose``: candidates within ``close`` of the best score at the search size go to
    full resolution, where the right one wins; a clear winner at the search size is kept
    without that."""
    _, pa, pb, truth = guided_inputs(textured_pairs)
    sa, ref = fourier_crop(pa, 64), prepare_reference(fourier_crop(pb, 64), 5)
    right = torch.tensor(truth[:, 0]).float() + 0.3
    angles = torch.stack([right + 180.0, right], 1)  # the first candidate is the wrong turn
    n = len(truth)
    slightly = torch.tensor([1.0, 0.95]).repeat(n, 1)  # favours it, but within 0.1
    full = prepare_reference(pb, 10)
    angle, pick, narrowed, sides = choose(pa, full.rows, sa, ref, angles, slightly, close=0.1,
                                          fine=True)
    assert (pick == 1).all() and narrowed.all()
    assert g.angle_error(angle.numpy(), truth[:, 0]).max() < 1.0
    # the polish reuses the two outer angles choose scored: the same estimates
    assert sides is not None and torch.equal(sides.rows, torch.arange(n))
    search = GuidedSearch(10)
    again, reused = search.polish(pa, pb, angle, full), search.polish(pa, pb, angle, full, sides)
    for field in ("angle", "tx", "ty", "score"):
        np.testing.assert_allclose(getattr(again, field), getattr(reused, field), atol=1e-4)
    by_far = torch.tensor([1.0, 0.5]).repeat(n, 1)
    _, pick, narrowed, sides = choose(pa, full.rows, sa, ref, angles, by_far, close=0.1,
                                      fine=True)
    assert (pick == 0).all() and not narrowed.any() and sides is None


def test_guided_search_with_a_prior_known_modulo_180(textured_pairs):
    """A network for a C2 particle knows the angle modulo 180: the search looks around both
    turns of its angle and keeps the one that scores best at full resolution."""
    search, pa, pb, truth = guided_inputs(textured_pairs)
    half = torch.tensor(truth[:, 0] + 180.0 * (np.arange(len(truth)) % 2) + 4.0).float()
    ang, shift = errors(search(pa, pb, half, turns=2), truth)
    assert ang.max() < 0.2 and shift.max() < 0.3


def test_guided_search_polish_walks_to_the_peak(textured_pairs):
    """Polishing from up to 0.7 deg off (the narrow stage hands it a few tenths): the three
    angles 0.5 deg apart slide a step when the peak lies beyond an end."""
    search, pa, pb, truth = guided_inputs(textured_pairs)
    start = torch.tensor(truth[:, 0] + np.array([0.7, -0.6, 0.6, -0.4, 0.0, 0.3, -0.7, 0.6]))
    ang, shift = errors(search.polish(pa, pb, start.float()), truth)
    assert ang.max() < 0.1 and shift.max() < 0.2


@pytest.mark.parametrize("n", [63, 48])
def test_odd_and_small_sizes(photo, n):
    from conftest import cut_pair

    a, b = cut_pair(photo, 250, 250, (123.0, 2.0, -3.0), n=n)
    est = BruteForce(max_shift=5).estimate(a, b)
    assert g.angle_error(est.angle[0], 123.0) < 0.5
    assert abs(est.tx[0] - 2.0) < 0.5 and abs(est.ty[0] + 3.0) < 0.5


class FixedOutputs(torch.nn.Module):
    """Stands in for a trained network: returns given head outputs whatever the images."""

    def __init__(self, outputs: torch.Tensor) -> None:
        super().__init__()
        from udl_align.network.models import preset

        self.cfg = preset("cpu")
        self.outputs = torch.nn.Parameter(outputs, requires_grad=False)

    def embed(self, x):
        return x

    def compare(self, fa, fb):
        return self.outputs[: fa.shape[0]]

    def forward(self, a, b):
        return self.compare(a, b)


def test_refine_sends_unsure_pairs_to_the_whole_circle(textured_pairs):
    from udl_align.aligners.network import NetworkAligner

    a, b, truth = textured_pairs
    wrong = np.deg2rad(truth[:, 0] + 90.0)  # every network angle 90 deg off, said unsurely
    out = 0.1 * torch.tensor(np.stack([np.cos(wrong), np.sin(wrong)], 1), dtype=torch.float32)
    gated = NetworkAligner(FixedOutputs(out), refine=True, max_shift=10, confidence_floor=0.5)
    assert errors(gated.estimate(a, b), truth)[0].max() < 0.5
    trusting = NetworkAligner(FixedOutputs(out), refine=True, max_shift=10, confidence_floor=0,
                              search_options={"probes": ()})
    assert errors(trusting.estimate(a, b), truth)[0].max() > 20.0  # stuck in false windows


def align_with_refine(a, b, model, tmp_path, capsys) -> str:
    """``align --pairs --model MODEL --refine`` on ``a``, ``b``; returns what it printed on
    stderr."""
    from udl_align.cli import main
    from udl_align.io.pairs import Pairs, write_pairs

    write_pairs(tmp_path / "pairs.npz", Pairs(np.asarray(a, np.float32), np.asarray(b, np.float32)))
    assert main(["align", "--pairs", str(tmp_path / "pairs.npz"), "--model", str(model),
                 "--refine", "--out", str(tmp_path / "est.csv"), "--quiet"]) == 0
    return capsys.readouterr().err


def test_a_network_its_calibration_distrusts_gets_no_trusted_window(textured_pairs, tmp_path,
                                                                    capsys):
    """A checkpoint whose label-free calibration shows nothing learned (few closed 3-cycles, or
    a collapsed output) is not trusted by --refine, however sure its outputs are."""
    from udl_align.aligners.network import NetworkAligner, untrusted
    from udl_align.network.checkpoint import DEFAULT_MODEL, load_checkpoint, save_checkpoint

    assert untrusted({"cycles_within_15deg": 0.95, "output_resultant": 0.05}) == ""
    assert "3-cycles" in untrusted({"cycles_within_15deg": 0.2, "output_resultant": 0.1})
    assert "collapsed" in untrusted({"cycles_within_15deg": 1.0, "output_resultant": 0.99})
    state = load_checkpoint(DEFAULT_MODEL)
    assert untrusted(state["offset_info"]) == ""  # the shipped model is trusted
    state["offset"] = (state["offset"] + 90.0) % 360.0  # every angle 90 deg off ...
    state["offset_info"] = {**state["offset_info"], "cycles_within_15deg": 0.2}  # ... and said
    save_checkpoint(tmp_path / "bad.pt", state)
    a, b, truth = textured_pairs
    refined = NetworkAligner.from_checkpoint(tmp_path / "bad.pt", refine=True, max_shift=10)
    assert refined.distrust and refined.confidence_floor == float("inf")
    assert errors(refined.estimate(a, b), truth)[0].max() < 0.5
    assert "warning" in align_with_refine(a, b, tmp_path / "bad.pt", tmp_path, capsys)


def test_the_trust_check_on_the_pairs_to_align_catches_what_calibration_missed(
        textured_pairs, tmp_path, capsys):
    """A network whose calibration looks fine but whose angles are 90 deg off: the trust check
    on the pairs to align (agreement with the exhaustive search, no labels) distrusts it,
    align warns once and --refine searches the whole circle."""
    from udl_align.aligners.network import NetworkAligner, distrusted_by_search
    from udl_align.network.checkpoint import DEFAULT_MODEL, load_checkpoint, save_checkpoint

    assert distrusted_by_search({"agreement": 0.9, "pairs": 64}) == ""
    assert "agree" in distrusted_by_search({"agreement": 0.1, "pairs": 64, "tolerance_deg": 15,
                                            "chance": 0.08})
    state = load_checkpoint(DEFAULT_MODEL)
    state["offset"] = (state["offset"] + 90.0) % 360.0
    state.pop("trust", None)
    save_checkpoint(tmp_path / "off.pt", state)
    a, b, truth = textured_pairs
    aligner = NetworkAligner.from_checkpoint(tmp_path / "off.pt", refine=True, max_shift=10,
                                             search_options={"probes": ()})
    assert aligner.distrust == ""  # its calibration alone trusts it
    info = aligner.check_trust(a, b)
    assert info["pairs"] == len(a) and info["agreement"] < 0.5
    assert aligner.distrust and aligner.confidence_floor == float("inf")
    assert errors(aligner.estimate(a, b), truth)[0].max() < 0.5
    err = align_with_refine(a, b, tmp_path / "off.pt", tmp_path, capsys)
    assert err.count("warning") == 1 and "exhaustive search" in err


def test_a_network_half_a_turn_off_has_its_turns_checked(textured_pairs, tmp_path):
    """A full-circle network that the trust check finds half a turn off too often (the turns
    of a near-symmetric particle confuse it) has each angle's turn picked by correlation: the
    shipped model with every angle turned by 180 deg is right again."""
    from udl_align.aligners.network import NetworkAligner, confuses_half_turns
    from udl_align.network.checkpoint import DEFAULT_MODEL, load_checkpoint, save_checkpoint

    state = load_checkpoint(DEFAULT_MODEL)
    state["offset"] = (state["offset"] + 180.0) % 360.0
    state.pop("trust", None)
    save_checkpoint(tmp_path / "half.pt", state)
    a, b, truth = textured_pairs
    aligner = NetworkAligner.from_checkpoint(tmp_path / "half.pt", max_shift=10)
    assert not aligner.half_turns
    assert np.median(errors(aligner.estimate(a, b), truth)[0]) > 150.0
    info = aligner.check_trust(a, b)
    assert info["half_turn_share"] > 0.5 and info["turn_agreement"] > 0.5
    assert confuses_half_turns(info) and aligner.half_turns
    # the filter its turns are told apart through is chosen there from 16 pairs or more
    assert "turn_lowpass" not in info and aligner.turn_preprocess is aligner.preprocess
    info = aligner.check_trust(np.concatenate([a, a]), np.concatenate([b, b]))
    assert set(info["turn_separation"]) == {"0.25", "0.5", "0"}
    assert aligner.turn_preprocess.lowpass == (info["turn_lowpass"] or None)
    assert np.median(errors(aligner.estimate(a, b), truth)[0]) < 10.0
    assert np.median(errors(aligner.estimate(a, b), truth)[0]) < 10.0
    assert confuses_half_turns({"half_turn_share": 0.09, "agreement": 0.64})
    assert not confuses_half_turns({"half_turn_share": 0.02, "agreement": 0.9})
    assert not confuses_half_turns({"half_turn_share": 0.08, "agreement": 0.08})  # chance
    assert not confuses_half_turns({"half_turn_share": None, "agreement": 0.9})


def test_network_path_shift_in_original_pixels(textured_pairs):
    """The network path's shift step runs at half resolution: given the true angle, the shift
    comes back in the images' own pixels, within the half-resolution parabola's error."""
    from udl_align.aligners.network import NetworkAligner

    a, b, truth = textured_pairs
    true = np.deg2rad(truth[:, 0])
    out = torch.tensor(np.stack([np.cos(true), np.sin(true)], 1), dtype=torch.float32)
    est = NetworkAligner(FixedOutputs(out), max_shift=10).estimate(a, b)
    ang, shift = errors(est, truth)
    assert ang.max() < 1e-3 and shift.max() < 0.35


def test_test_time_quarter_turns_are_exact_and_averaged(textured_pairs):
    """With test turns the network also sees the second image turned by quarter turns: the
    answer for a pair whose second image is turned a quarter more is the answer plus 90 deg
    (the same answers, each with its known turn taken off), for any network, trained or not;
    and on the shipped model the averaged angle is no worse than one answer."""
    from udl_align.aligners.network import NetworkAligner
    from udl_align.network.checkpoint import DEFAULT_MODEL
    from udl_align.network.models import AlignNet, preset

    a, b, truth = textured_pairs
    torch.manual_seed(0)
    untrained = AlignNet(preset("cpu", size=32, channels=(8, 8, 16, 16), fc=(32, 32),
                                match_channels=(8, 8), mask_channels=(4,)))
    aligner = NetworkAligner(untrained, max_shift=10, test_turns=4)
    ta, tb = aligner.inputs(a, b)
    angle, sure = aligner.network_estimate(ta, tb)
    turned, sure_turned = aligner.network_estimate(ta, torch.rot90(tb, 1, dims=(-2, -1)))
    assert g.angle_error(turned.numpy(), angle.numpy() + 90.0).max() < 0.01  # float32
    assert torch.allclose(sure, sure_turned, atol=1e-5)
    single = NetworkAligner.from_checkpoint(DEFAULT_MODEL, max_shift=10, test_turns=1)
    four = NetworkAligner.from_checkpoint(DEFAULT_MODEL, max_shift=10, test_turns=4)
    assert four.test_turns == 4 and single.test_turns == 1
    assert errors(four.estimate(a, b), truth)[0].mean() <= errors(
        single.estimate(a, b), truth)[0].mean() + 0.5
    with pytest.raises(ValueError, match="1, 2 or 4"):
        NetworkAligner(untrained, test_turns=3)


def two_fold_with_detail(width: float, height: float, sigma: float, seed: int = 0):
    """A two-fold particle (a ring and a centre) plus one off-centre blob of ``width`` px
    and ``height`` (which alone tells its turns apart), turned and shifted at random in 64
    noisy copies (white noise of ``sigma``); returns the references, the copies and the
    true angles."""
    n, k = 64, 64
    yy, xx = g.centred_grid(n)
    ring = np.exp(-((np.hypot(xx, yy) - 14) ** 2) / 18) + np.exp(-(xx**2 + yy**2) / 30)
    blob = np.exp(-((xx - 9) ** 2 + (yy - 5) ** 2) / (2 * width**2))
    ref = (ring + height * blob).astype(np.float32)
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0, 360, k)
    b = np.stack([g.apply(ref, (t, *rng.uniform(-3, 3, 2))) for t in truth])
    b = (b + sigma * rng.standard_normal(b.shape)).astype(np.float32)
    return (torch.from_numpy(np.repeat(ref[None], k, 0)), torch.from_numpy(b),
            torch.tensor(truth, dtype=torch.float32))


@pytest.mark.parametrize("width, height, sigma, wanted", [(0.8, 3.0, 0.5, {0.5, 0.0}),
                                                          (6.0, 1.0, 2.0, {0.25})])
def test_turns_are_told_apart_through_the_filter_that_keeps_their_difference(
        width, height, sigma, wanted):
    """Where a particle's turns differ in fine detail (a 0.8 px blob) a wider filter than the
    shared one tells them apart better; where they differ in a broad blob (6 px) under more
    noise, the shared filter does (the detail only adds noise). Chosen without labels from
    the poses' contrast between turns (at the true poses here)."""
    from udl_align.aligners.correlation import turn_contrast, turn_separation
    from udl_align.aligners.network import turn_filter

    ta, tb, truth = two_fold_with_detail(width, height, sigma)
    chosen = turn_filter(ta, tb, truth, 6, 2, 0.25)
    assert chosen["turn_lowpass"] in wanted, chosen
    # the contrast is positive at the true poses and negative half a turn off
    pre = Preprocess(chosen["turn_lowpass"] or None)
    right = turn_contrast(pre(ta), pre(tb), truth, 6)
    assert (right > 0).float().mean() > 0.9
    assert torch.allclose(turn_contrast(pre(ta), pre(tb), truth + 180.0, 6), -right, atol=1e-4)
    assert turn_separation(right) > 2.0
    assert turn_filter(ta[:8], tb[:8], truth[:8], 6, 2, 0.25) == {}  # too few pairs
