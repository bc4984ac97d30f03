"""The UDL aligner: the network's angle (offset C removed), then the shared shift step, or with
``refine`` the exhaustive search guided by the network's angle (:mod:`.guided`): a window
around it, the whole circle for pairs the network is unsure of, then full resolution.

The network sees each image resampled to its own input size (bilinear with antialiasing,
standardised, masked: :func:`udl_align.training.prepare_input`), or the log-magnitude of its
spectrum for a spectrum network, which gives the angle modulo 180, and a network for a
particle of symmetry C_n gives it modulo 360/n: the turn is then chosen by correlation, as it
is for a full-circle network that its trust check finds half a turn off too often (the turns
of a near-symmetric particle). The shift and the refinement work on the original images.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from udl_align.aligners.base import Aligner, Estimate, run_aligner
from udl_align.aligners.bruteforce import BruteForce
from udl_align.aligners.correlation import (
    Preprocess,
    best_angle,
    prepare_reference,
    score_angles,
    shift_step,
    turn_contrast,
    turn_separation,
)
from udl_align.aligners.guided import GuidedSearch, choose, cropped_size
from udl_align.errors import InputError
from udl_align.filters import fourier_crop
from udl_align.network.calibration import confidence
from udl_align.network.checkpoint import load_checkpoint, model_from_checkpoint, resolve_model_path
from udl_align.network.inputs import model_input
from udl_align.network.losses import angle_of
from udl_align.network.models import AlignNet, fused_for_inference, to_device
from udl_align.network.predict import predict_against_each

#: label-free signs that a network learned nothing (see ``calibration.offset_label_free``):
#: ``--refine`` then takes none of its angles on trust. The shipped natural model closes 95% of
#: unlabelled 3-cycles within 15 deg with a resultant of 0.05; networks that learned nothing
#: closed 8-30% (random or shortcut outputs) or had a resultant of 0.97-1.0 (a constant).
MIN_CYCLES_CLOSED = 0.5
MAX_OUTPUT_RESULTANT = 0.9
#: the trust check against the exhaustive search (:func:`search_agreement`): this many pairs,
#: agreement within this many degrees (``--refine``'s default window), and the share of pairs
#: that must agree. Chance agreement is 2 x 15 / 360 = 8% on the full circle (17% modulo 180)
TRUST_PAIRS = 64
TRUST_TOLERANCE = 15.0
MIN_AGREEMENT = 0.5
#: a full-circle network whose angle is half a turn off the exhaustive search's on at least
#: this share of the trust check's pairs (the turns of a near-symmetric particle confuse it)
#: has each angle's turn checked by correlation (:func:`pick_turn`), as a C2 network has
HALF_TURN_SHARE = 0.05
#: the trust check chooses, from at least this many of its pairs, the pre-filter of the
#: full-resolution stages (:func:`turn_filter`)
MIN_TURN_PAIRS = 16





#: the most passes of a residual stage an aligner runs (each costs about a quarter of the
#: network's time)
RESIDUAL_STEPS_MAX = 4


class NetworkAligner(Aligner):
    name = "network"
    batch_size = 64  # the network's forward is 30% cheaper per pair at 64 than at 16 (2 cores)
    # pairs per guided search (refine): with the heap keeping freed memory (the command line's
    # udl_align.allocator) 6% faster than 32 and as fast as 128 (2 cores, 128 held-out pairs)
    search_batch = 64

    def __init__(
        self,
        model: AlignNet,
        offset: float = 0.0,
        refine: bool = False,
        refine_span: float = 15.0,
        search_options: dict | None = None,
        confidence_floor: float | None = None,
        device: str | torch.device = "cpu",
        half_turns: bool = False,
        test_turns: int | None = None,
        residual_steps: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(device=device, **kwargs)
        self.model = to_device(fused_for_inference(model), self.device)
        self.offset = float(offset)
        # with refine: pairs the network is less sure of than this get the whole-circle search
        self.confidence_floor = float(confidence_floor or 0.0)
        self.refine_enabled = bool(refine)
        self.refine_span = float(refine_span)
        # other GuidedSearch settings (benchmarks/refine_settings.py compares them)
        self.search_options = dict(search_options or {})
        self.name = "network+refine" if refine else "network"
        # a full-circle network that confuses half turns: each angle's turn is checked
        self.half_turns = bool(half_turns)
        # the pre-filter of the full-resolution stages: the turn decision and the polish (the
        # trust check chooses it: :func:`turn_filter`); the shared one until then
        self.turn_preprocess = self.preprocess
        # the network's own angle (not --refine's prior) is the circular mean over this many
        # quarter turns of the second image (1, 2 or 4; default: the network config's)
        self.test_turns = check_test_turns(self.model.cfg.test_turns if test_turns is None
                                           else test_turns)
        # the passes of the model's residual stage (None: the model's own; 0: the head alone).
        # --refine's prior is the head's angle alone: the window around it finds the same
        # angles. On 200 held-out pairs of the independent generator (Gaussian SNR 0.05 / 0.1,
        # salt-and-pepper 0.3) refine's mean error was 4.28 / 1.35 / 1.15 deg with two passes,
        # 4.32 / 1.31 / 1.16 with none, at 12% / 3% / 9% less speed
        if residual_steps is None and self.refine_enabled:
            residual_steps = 0
        if residual_steps is not None and getattr(self.model, "residual", None) is not None:
            if residual_steps not in range(RESIDUAL_STEPS_MAX + 1):
                raise ValueError(f"residual steps must be 0-{RESIDUAL_STEPS_MAX}, got "
                                 f"{residual_steps}")
            self.model.residual_steps = int(residual_steps)
        # why the checkpoint's own calibration, or a trust check on the pairs to align
        # (:meth:`check_trust`), says not to trust this network ("": it may)
        self.distrust = ""

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> NetworkAligner:

        path = resolve_model_path(path)
        state = load_checkpoint(path)
        offset = state.get("offset")
        if offset is None:
            raise InputError("checkpoint has no offset C: calibrate it first "
                             "(udl-align train writes one at the end)", path)
        distrust = untrusted(state.get("offset_info") or {}, state.get("trust"))
        if distrust:  # no floor, not even one given, makes such a network's angles sure
            kwargs["confidence_floor"] = math.inf
        elif kwargs.get("confidence_floor") is None:
            kwargs["confidence_floor"] = state.get("confidence_floor")
        kwargs.setdefault("half_turns", confuses_half_turns(state.get("trust")))
        aligner = cls(model_from_checkpoint(state, path), offset=offset, **kwargs)
        aligner.distrust = distrust
        aligner.use_turn_filter(state.get("trust"))
        return aligner

    def use_turn_filter(self, trust: dict | None) -> None:
        """See the images at full resolution through the pre-filter a trust check chose
        (``turn_lowpass``: a Gaussian's sigma as a share of Nyquist, 0 for none), where it
        chose one."""
        if trust and trust.get("turn_lowpass") is not None:
            self.turn_preprocess = Preprocess(trust["turn_lowpass"] or None)

    def full_views(self, ta: torch.Tensor, tb: torch.Tensor):
        """``ta``, ``tb`` through the turn filter (:attr:`turn_preprocess`), for the stages at
        full resolution (where a network's turns are told apart, and the polish); ``None``
        where it is the shared pre-filter."""
        return _views_through(self.turn_preprocess, self.preprocess, ta, tb)

    @torch.no_grad()
    def network_estimate(self, a: torch.Tensor, b: torch.Tensor, test_turns: int | None = None):
        """The network's angles (offset C removed) and confidences (``calibration.confidence``;
        infinite for a scalar head, which has none), both ``(B,)`` on the aligner's device.

        With ``test_turns`` (default :attr:`test_turns`) above 1, ``b`` is also turned by
        quarter turns (exact: no interpolation), the known turn is taken off each answer and
        the answers are averaged on the head's circle (their 2-vectors, so the confidence is
        the length of the mean: it shrinks where the turns disagree)."""
        cfg = self.model.cfg
        turns = self.test_turns if test_turns is None else check_test_turns(test_turns)
        pa = model_input(cfg, a, repair=False)  # impulses already repaired (:meth:`inputs`)
        quarters = range(0, 4, 4 // turns)
        turned = [model_input(cfg, torch.rot90(b, q, dims=(-2, -1)) if q else b, repair=False)
                  for q in quarters]
        votes = []
        for quarter, out in zip(quarters, predict_against_each(self.model, pa, turned),
                                strict=True):
            turn = math.radians(90.0 * quarter * cfg.angle_factor)
            length = confidence(out) if cfg.head != "scalar" else torch.ones(out.shape[0])
            votes.append(length * torch.exp(1j * (torch.deg2rad(angle_of(out, cfg.head)) - turn)))
        mean = torch.stack(votes).mean(0)
        # a spectrum network's outputs live on the doubled circle: this is the angle mod 180
        angle = torch.remainder((torch.rad2deg(torch.angle(mean)) - self.offset)
                                / cfg.angle_factor, 360.0 / cfg.angle_factor)
        sure = mean.abs() if cfg.head != "scalar" else torch.full_like(angle, torch.inf)
        return angle.float().to(self.device), sure.float().to(self.device)

    @torch.no_grad()
    def estimate(self, a, b) -> Estimate:
        ta, tb = self.inputs(a, b)
        # --refine's prior is one answer: its confidence floor was set on single answers
        angle, sure = self.network_estimate(ta, tb, 1 if self.refine_enabled else None)
        turns = self.model.cfg.angle_factor
        if not self.refine_enabled and turns == 1 and not self.half_turns:
            return self.fast_shift(ta, tb, angle)
        pa, pb = self.preprocess(ta), self.preprocess(tb)
        s = self.shift_range(ta.shape[-1])
        if self.refine_enabled:  # the guided search looks at the turns itself
            # the half turn is looked at only where the network confuses it (its trust check)
            search = GuidedSearch(s, **{"span": self.refine_span, "half_turn": self.half_turns,
                                        **self.search_options})
            # an infinite floor: every pair (a scalar head's confidence is itself infinite)
            unsure = (torch.ones_like(angle, dtype=torch.bool)
                      if math.isinf(self.confidence_floor) else sure < self.confidence_floor)
            # the search's many rotated copies outgrow the caches in big batches
            k = self.search_batch
            views = self.full_views(ta, tb)
            return Estimate.concat([
                search(pa[lo:lo + k], pb[lo:lo + k], angle[lo:lo + k], unsure[lo:lo + k],
                       turns=turns, alike=self.model.cfg.symmetry > 1,
                       full=None if views is None else (views[0][lo:lo + k],
                                                        views[1][lo:lo + k]))
                for lo in range(0, pa.shape[0], k)])
        angle = pick_turn(pa, pb, angle, s, max(turns, 2), self.full_views(ta, tb))
        return self.shift(pa, pb, angle, s)

    def distrust_message(self, item: str = "pair") -> str:
        """Why this network is not trusted and what follows, for a warning line."""
        what = (f"--refine searches the whole circle for every {item}" if self.refine_enabled
                else "its angles are unreliable (add --refine to search around them)")
        return f"{self.distrust}; {what}"

    def check_trust(self, a, b, warn=None, item: str = "pair", seed: int = 0) -> dict:
        """The trust check (:func:`search_agreement`) on up to ``TRUST_PAIRS`` of the pairs
        ``a``, ``b`` about to be aligned (a seeded sample). When the network agrees too seldom
        with the exhaustive search (and was trusted until then), :attr:`distrust` says why,
        ``refine`` searches the whole circle for every pair, and ``warn`` (if given) is told
        :meth:`distrust_message` for ``item``. Returns the check's record."""
        n = len(a)
        pick = np.sort(np.random.default_rng(seed).choice(n, min(n, TRUST_PAIRS), replace=False))
        info = search_agreement(self, np.asarray(a[pick]), np.asarray(b[pick]))
        self.half_turns = self.half_turns or confuses_half_turns(info)
        self.use_turn_filter(info)
        reason = distrusted_by_search(info)
        if reason and not self.distrust:
            self.distrust = reason
            self.confidence_floor = math.inf
            if warn is not None:
                warn(self.distrust_message(item))
        return info

    def fast_shift(self, a: torch.Tensor, b: torch.Tensor, angle: torch.Tensor) -> Estimate:
        """The network path's shift step on raw images, at half resolution but not below
        64 px (the low-pass and the down-sampling in one FFT pass): the network's angle is
        degrees off, which costs the shift far more than half resolution does (mean shift
        error on 200 held-out COCO pairs: 1.56 / 3.61 / 4.47 px against 1.39 / 3.70 / 4.42 at
        full resolution, clean / SNR 0.1 / salt-and-pepper 0.3), at a third of the time
        (the whole network path: 20-30x bruteforce's pairs/s against 17.5-20x)."""
        n = a.shape[-1]
        m = cropped_size(n, max(64, n // 2))
        est = self.shift(self.preprocess(a, m), self.preprocess(b, m), angle,
                         self.shift_range(n) * m / n)
        est.tx, est.ty = est.tx * (n / m), est.ty * (n / m)
        return est

    def shift(self, a: torch.Tensor, b: torch.Tensor, angle: torch.Tensor,
              max_shift: float) -> Estimate:
        # parabola peaks and bilinear rotation: the network's angle is a few degrees off, which
        # costs far more shift accuracy than either; exact peaks would double the time
        tx, ty, score = shift_step(a, b, angle, max_shift, fine=False, mode="bilinear")
        return Estimate.from_tensors(angle, tx, ty, score)


def check_test_turns(turns: int) -> int:
    """``turns`` if it is a number of test-time quarter turns (1, 2 or 4)."""
    if turns not in (1, 2, 4):
        raise ValueError(f"test turns must be 1, 2 or 4 (quarter turns), got {turns}")
    return int(turns)


def search_agreement(network: NetworkAligner, a, b, tolerance: float = TRUST_TOLERANCE
                     ) -> dict:
    """The label-free trust check: how often the network's angle (offset C removed) lies
    within ``tolerance`` degrees of the exhaustive search's (:class:`BruteForce`) on the pairs
    ``a``, ``b``, modulo what the network can know (360 deg / its angle factor: a spectrum's
    180, a C_n particle's 360 / n).

    The 3-cycles and the output resultant of the calibration miss a network that follows
    something that turns with each image but is not the content (its own noise, a background):
    such a network is consistent with itself and wrong. The exhaustive search is slow but
    follows the content, so a network that learned agrees with it on most pairs and one that
    did not agrees at chance (``2 tolerance / period``). No labels are used.

    A network that knows the angle modulo ``360 / turns`` is judged there (a truly symmetric
    particle's turn is arbitrary, for the search as well). For a full-circle network,
    ``half_turn_share`` is the share of pairs where its angle is half a turn off the search's
    (within ``tolerance``; chance is ``2 tolerance / 360``, as for the agreement): the turns of
    a near-symmetric particle confuse it (``None`` for a network that knows the angle modulo
    ``360 / turns``). ``turn_agreement`` says on how many pairs the turn the aligner picks by
    correlation (:func:`pick_turn`) makes the angle agree on the full circle (``None`` where
    the aligner picks none: a full-circle network that does not confuse half turns).

    Returns ``{"agreement", "pairs", "tolerance_deg", "period_deg", "chance",
    "median_difference_deg", "half_turn_share", "turn_agreement"}``."""
    ta, tb = network.inputs(a, b)
    turns = network.model.cfg.angle_factor
    period = 360.0 / turns
    angle, _ = network.network_estimate(ta, tb)
    search = BruteForce(max_shift=network.max_shift, lowpass=network.preprocess.lowpass,
                        device=network.device)
    found = run_aligner(search, ta, tb, progress=False)[0].angle

    def within(estimate: torch.Tensor, period: float) -> np.ndarray:
        return np.abs((estimate.cpu().numpy() - found + period / 2) % period - period / 2)

    diff = within(angle, period)
    half_turn_share = (float(np.mean(within(angle + 180.0, 360.0) <= tolerance)) if turns == 1
                       else None)
    turn_agreement = None
    s = network.shift_range(ta.shape[-1])
    chosen = turn_filter(ta, tb, torch.as_tensor(found, dtype=ta.dtype, device=ta.device), s,
                         max(turns, 2), network.preprocess.lowpass)
    if turns > 1 or half_turn_share >= HALF_TURN_SHARE:
        lowpass = chosen.get("turn_lowpass")
        views = (None if lowpass is None else
                 _views_through(Preprocess(lowpass or None), network.preprocess, ta, tb))
        pa, pb = network.preprocess(ta), network.preprocess(tb)
        picked = pick_turn(pa, pb, angle, s, max(turns, 2), views)
        turn_agreement = float(np.mean(within(picked, 360.0) <= tolerance))
    return {"agreement": float(np.mean(diff <= tolerance)), "pairs": int(len(diff)),
            "tolerance_deg": float(tolerance), "period_deg": period,
            "chance": min(2.0 * tolerance / period, 1.0),
            "median_difference_deg": float(np.median(diff)),
            "half_turn_share": half_turn_share, "turn_agreement": turn_agreement, **chosen}


def _views_through(view: Preprocess, shared: Preprocess, ta: torch.Tensor, tb: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``ta``, ``tb`` through the pre-filter ``view``, or ``None`` where it is ``shared``
    (the images the aligner pre-processed already serve)."""
    if view.lowpass == shared.lowpass:
        return None
    return view(ta), view(tb)


def turn_filters(lowpass: float | None) -> tuple[float | None, ...]:
    """The pre-filters :func:`turn_filter` chooses from: the shared one (``lowpass``), twice
    its width, and none."""
    return (lowpass, 2.0 * lowpass, None) if lowpass else (None,)


def turn_filter(ta: torch.Tensor, tb: torch.Tensor, found: torch.Tensor, max_shift: float,
                turns: int, lowpass: float | None) -> dict:
    """The pre-filter through which the turns of the poses ``found`` (an exhaustive search's,
    of the pairs ``ta``, ``tb``: impulses repaired, not yet pre-filtered) are told apart best,
    by their :func:`~udl_align.aligners.correlation.turn_separation` (no labels), from
    :func:`turn_filters`. Which one serves depends on the particle: the fine detail that
    tells GroEL's turns apart is what the shared filter takes off, while EMPIAR-10398's
    turns differ at low frequencies and the detail only adds noise. On the strict Table 2's
    test stacks (1000 held-out particles each, poses from ``bruteforce``), 64 particles drawn
    at random chose a filter that left 0.0 wrong turns on average for GroEL (the shared
    filter: 9) and 26.6 for EMPIAR-10398 (the best filter, the shared one: 25; none: 55).

    :class:`NetworkAligner` sees the images through it at full resolution, where the turns
    are told apart and the angle is polished. The fine detail also sharpens the polish of a
    full-circle particle network, for which it chose none (its turns compared: the pose and
    its half turn): refine on the strict test stacks (1000 particles each) EMPIAR-10874 0.075
    deg against 0.27 with the shared filter, EMPIAR-10029 0.18 against 0.31, EMPIAR-10034
    0.48 against 0.59, EMPIAR-10065 0.55 against 0.57. On photographs, where the shared
    filter served the polish better (Gaussian SNR 0.5: 0.26 deg against 0.38 with none), it
    chose the shared one under Gaussian SNR 0.05 and 0.1 and salt-and-pepper 0.3, twice as
    wide at SNR 0.5 (0.27) and none on clean pairs (64 held-out pairs each).

    Returns ``{"turn_lowpass": chosen (0: none), "turn_separation": {filter: separation}}``,
    or ``{}`` with fewer than ``MIN_TURN_PAIRS`` pairs."""
    if ta.shape[0] < MIN_TURN_PAIRS:
        return {}
    separation = {}
    for candidate in turn_filters(lowpass):
        view = Preprocess(candidate)
        separation[candidate] = turn_separation(
            turn_contrast(view(ta), view(tb), found, max_shift, turns))
    best = max(separation, key=lambda k: separation[k])
    return {"turn_lowpass": float(best or 0.0),
            "turn_separation": {f"{k or 0:g}": round(v, 4) for k, v in separation.items()}}


def confuses_half_turns(trust: dict | None) -> bool:
    """Whether a trust check (:func:`search_agreement`) found a full-circle network half a
    turn off on at least ``HALF_TURN_SHARE`` of its pairs while it agrees modulo 180 on at
    least ``MIN_AGREEMENT`` (a network that learned nothing is as often half a turn off as
    anywhere else: checking its turns would not help)."""
    if not trust or trust.get("half_turn_share") is None:
        return False
    half = trust["half_turn_share"]
    return half >= HALF_TURN_SHARE and half + trust.get("agreement", 0.0) >= MIN_AGREEMENT


def distrusted_by_search(trust: dict | None) -> str:
    """Why a trust check (:func:`search_agreement`) says the network did not learn, or ``""``."""
    if not trust or trust.get("agreement") is None or trust["agreement"] >= MIN_AGREEMENT:
        return ""
    return (f"its angles agree with the exhaustive search's on only {trust['agreement']:.0%} of "
            f"{trust['pairs']} pairs within {trust['tolerance_deg']:g} deg (chance "
            f"{trust['chance']:.0%}; a trained network: over {MIN_AGREEMENT:.0%})")


def untrusted(offset_info: dict, trust: dict | None = None) -> str:
    """Why a UDL checkpoint's label-free calibration or trust check (``trust``, from
    :func:`search_agreement` at the end of training) says its network learned nothing, or
    ``""``. Then ``--refine`` searches the whole circle for every pair (as ``bruteforce``), so
    a network that is wrong but sure of itself cannot lead it astray (measured on particles:
    25 deg with the window trusted, against 0.57 for ``bruteforce``)."""
    by_search = distrusted_by_search(trust)
    if by_search:
        return by_search
    cycles = offset_info.get("cycles_within_15deg")
    resultant = offset_info.get("output_resultant")
    if cycles is not None and cycles < MIN_CYCLES_CLOSED:
        return (f"it closes only {cycles:.0%} of unlabelled 3-cycles within 15 deg "
                f"(a trained network: over {MIN_CYCLES_CLOSED:.0%})")
    if resultant is not None and resultant > MAX_OUTPUT_RESULTANT:
        return f"its outputs collapsed to one angle (resultant {resultant:.2f})"
    return ""


#: where :func:`pick_turn` scores each turn at 64 px: around it, in degrees (the network's
#: angle is a few degrees off, and a near-symmetric particle's turns differ by less than
#: that costs)
PICK_GRID = (-12.0, -9.0, -6.0, -3.0, 0.0, 3.0, 6.0, 9.0, 12.0)


def pick_turn(a: torch.Tensor, b: torch.Tensor, angle: torch.Tensor, max_shift: int,
              turns: int = 2, full: tuple[torch.Tensor, torch.Tensor] | None = None
              ) -> torch.Tensor:
    """The one of ``angle + k 360 / turns`` (k < turns) that correlates best: a network that
    knows the angle only modulo ``360 / turns`` (a spectrum's 180, a symmetric particle's)
    cannot tell them apart. Each turn is scored at its best of ``PICK_GRID`` around it (masked
    NCC over shifts on pre-processed images cropped to 64 px); turns that score alike there
    are told apart at full resolution (:func:`udl_align.aligners.guided.choose`). The
    network's own angle is returned, turned. On GroEL's strict Table 2 test stack (C2
    network) the best turn at 64 px was wrong for 14% of the particles (26% at +-6 deg), at
    full resolution for 1.3%. ``full``: ``a`` and ``b`` through the turn filter
    (:func:`turn_filter`) for the full-resolution comparison (default: ``a``, ``b``)."""
    n = a.shape[-1]
    m = cropped_size(n, 64)
    sa = fourier_crop(a, m)
    ref = prepare_reference(fourier_crop(b, m), max_shift * m / n)
    steps = torch.arange(turns, dtype=angle.dtype, device=angle.device) * (360.0 / turns)
    candidates = angle[:, None] + steps
    local = torch.tensor(PICK_GRID, dtype=angle.dtype, device=angle.device)
    grid = candidates[:, :, None] + local
    scores, _, _ = score_angles(sa, ref, grid.flatten(1), mode="bicubic")
    scores = scores.reshape(grid.shape)
    found, _ = best_angle(grid.reshape(-1, len(PICK_GRID)), scores.reshape(-1, len(PICK_GRID)),
                          PICK_GRID[1] - PICK_GRID[0], circular=False)
    # the full-resolution reference only of the pairs whose turns score alike at 64 px
    fa, fb = (a, b) if full is None else full
    _, pick, _, _ = choose(fa, lambda rows: prepare_reference(fb[rows], max_shift), sa, ref,
                           found.reshape(len(angle), turns), scores.amax(dim=2))
    return torch.remainder(candidates.gather(1, pick[:, None])[:, 0], 360.0)


__all__ = ["NetworkAligner", "confuses_half_turns", "pick_turn", "untrusted",
           "search_agreement", "distrusted_by_search", "turn_filter", "turn_filters"]
