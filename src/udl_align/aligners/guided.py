"""Exhaustive search guided by a prior angle: how ``--refine`` turns the network's angle into
bruteforce-grade accuracy at a fraction of bruteforce's cost.

All stages work on pre-processed images (the shared pre-filter) and score angles with the
shared masked NCC (:mod:`.correlation`):

1. **window**: ``prior +- span`` in ``window_step`` steps on images Fourier-cropped to
   ``search_size`` (the size of bruteforce's coarse search; the outer part only where the
   inner +-``inner_span`` peaks at its edge), with probes at the prior turned
   by a quarter and a half turn. Where the prior is known only modulo ``360 / n`` (a network
   for a C_n particle), or a full-circle network confuses half turns (its trust check says
   so), the window's best is also scored turned by each turn (a near-symmetric particle's
   turns peak at the same angle modulo the turn; a spectrum network's turns, which differ on
   a photograph, get a window each), and turns that score alike are told apart at full
   resolution (:func:`choose`). A best angle at the window's edge, a higher score at a
   probe, or a best score far below the batch's typical one (``low_share``) says the truth
   may lie outside.
2. **fallback**, for pairs whose prior is unsure (the caller says which) or whose window says
   so: the whole circle at ``fallback_step`` on images cropped to ``fallback_size``;
   its best ``candidates`` peaks and the window's best are each searched ``verify`` steps of
   ``verify_step`` deg either side at ``search_size``, and the best of those wins (the close
   ones narrowed and compared at full resolution as in :func:`choose`, whose scores the
   polish reuses; two that climbed to the same peak, within ``same_peak`` deg of each other,
   count once). A pair that needs the whole circle gets it,
   at about a seventh of bruteforce's price (a quarter of its angles at 48 px). The
   verification rotates bilinearly (``verify_mode``): it only ranks the candidates, whose
   winner is narrowed and polished after with bicubic rotation; on 200 held-out pairs per
   condition (both generators, side by side) every mean and median error was the same as
   with bicubic rotation and without merging, and a fallback pair cost 14-20% less (64
   held-out pairs at Gaussian SNR 0.05, the two versions timed in turn; at
   Gaussian SNR 0.1, 21 of 25 pairs whose candidates went to full resolution had the
   window's best and a coarse peak on the same peak).
3. **narrow**: +-1 deg in 0.5 deg steps at ``search_size`` (bicubic rotation), unless
   :func:`choose` has narrowed the angle already.
4. **polish** at full resolution: three angles 0.5 deg apart with exact sub-pixel peaks,
   one step outward if the best is at an end, a parabola over the angle, and the shift
   interpolated to that angle (so no further shift step is needed). Steps of 0.25 deg walked
   1.6 times per pair at SNR 0.05 (the narrow stage's angle is noisier than a quarter
   degree there) for no accuracy: 0.5 deg and one walk measured the same on 200 held-out
   pairs in all seven conditions, 10-15% faster.

The defaults were chosen by measurement on held-out COCO pairs (200 per condition, against
bruteforce in the same run; ``benchmarks/refine_settings.py`` compares settings). A fallback
at 32 px in 4 deg steps lost pairs that bruteforce finds even with 6 candidates
(salt-and-pepper 0.2: 1.64 against 0.82 deg; Gaussian SNR 0.05: 3.61 against 3.00), and so
did one at 40 px in 3 deg steps (salt-and-pepper 0.2: 1.51); at 48 px in 4 deg steps,
candidates checked at -1.5, 0 and +1.5 deg, and a window in 2 deg steps every condition
stayed within 5% of bruteforce, 10% faster than 3 deg steps, +-2 deg checks and a 1.5 deg
window. A window at 48 px lost accuracy (Gaussian SNR 0.5: 0.32 against 0.26 deg).
Six candidates, not four: on the independent generator's Gaussian SNR 0.05 (200 held-out
pairs, seeds 2024 / 7 / 8), 4.37 / 4.40 / 4.91 deg against 4.71 / 4.40 / 4.81 (``bruteforce``
4.25 / 4.31 / 4.80; on seed 2024 one pair's right basin was the fifth peak at 48 px), the same
on the other conditions and on the strict Table 2 test stacks, at the same speed within the
measurement's noise (the fallback sees 10-20% of the pairs). Sending fewer pairs there
(``low_share`` 0.6) took EMPIAR-10029 from 0.18 to 0.50 deg.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from udl_align import geometry
from udl_align.aligners.base import Estimate
from udl_align.aligners.correlation import (
    Reference,
    best_angle,
    prepare_reference,
    score_angles,
    top_peaks,
)
from udl_align.filters import fourier_crop

#: angles from the prior (deg) scored beside the window: if one beats the window's best, the
#: pair gets the whole circle
PROBES = (90.0, 180.0, 270.0)


def cropped_size(n: int, size: int | None) -> int:
    """The size a search at ``size`` works at: ``size`` (made even) when it is smaller than an
    even ``n``, else ``n`` itself (Fourier cropping keeps the centre only between even sizes)."""
    if size and size < n and n % 2 == 0:
        return int(size) // 2 * 2
    return n


#: a pair whose best score at the search size (window or turns) is below this share of the
#: batch's median best score goes to the whole circle: the window missed the right basin (a
#: prior more than ``span`` off whose window shows no edge and no probe above it). Measured on
#: the strict Table 2 test stacks (300 held-out particles each, side by side with
#: bruteforce): every pair of EMPIAR-10397 that ended more than 3 deg off had 0.21-0.57 of
#: the median (the right basins of all seven stacks: 95% above 0.74, 0.90 where the window
#: held them), and the check took EMPIAR-10397 from 1.41 to 0.15 deg, bruteforce's 0.15.
#: On held-out photographs (200 pairs, seven conditions, both generators, side by side) it
#: moved three means by 0.12-0.14 deg, on either side of bruteforce's (Gaussian SNR 0.1 on
#: synth 1.31 against 1.17 without it, bruteforce 1.24; SNR 0.05 3.07 / 2.93 / 3.00,
#: independent 4.64 / 4.52 / 4.25), the others by at most 0.01
LOW_SHARE = 0.7

#: the window is scored first over +- this many degrees of the prior; the rest of it only for
#: the pairs whose best there lies at one of its two outermost angles (the full window would
#: look further). The network's angle is within a few degrees for most pairs, so most pairs
#: score 9 angles instead of 31. On 200 held-out photograph pairs per condition (both
#: generators, side by side) every mean stayed the same or fell (independent Gaussian SNR 0.1
#: 1.36 -> 1.31, 0.05 4.37 -> 4.32; ``bruteforce`` 1.30, 4.25), about 8% faster on average;
#: on the strict Table 2 test stacks every error stayed the same. ``None``: the whole window
#: for every pair
INNER_SPAN = 8.0

#: candidates whose score at the search size lies within this share of the best's are told
#: apart at full resolution (:func:`choose`). On the strict Table 2 test stacks (300 held-out
#: particles each), every pair whose half turn won at 64 px by mistake was within 0.082
#: (EMPIAR-10397); 0.1 sends 0-10% of the pairs of a full-circle network to full resolution
#: (all of a C2 network's: its turns score within 0.03 at 64 px)
CLOSE = 0.1
#: at most this many of the closest candidates go to full resolution
CLOSE_MAX = 3
#: where :func:`choose` scores each close candidate at full resolution: these offsets (deg)
#: from its narrowed angle, the best of them counting (the narrowed angle alone took GroEL's
#: refine to 3.29 deg against bruteforce's 2.09: more particles on the wrong turn)
FULL_OFFSETS = (-0.5, 0.5)


def _close(scores: torch.Tensor, close: float) -> torch.Tensor:
    """Which of the candidates' scores ``(B, C)`` lie within ``close`` of their row's best (a
    share of its magnitude)."""
    best = scores.amax(dim=1, keepdim=True)
    return scores >= best - close * best.abs()


def _narrow(sa: torch.Tensor, ref: Reference, angles: torch.Tensor) -> torch.Tensor:
    """Each of the angles ``(B, K)`` narrowed at the search size (``sa`` against ``ref``):
    +-1 deg in half steps (bicubic rotation), then a parabola."""
    b, k = angles.shape
    grid = angles[:, :, None] + torch.arange(-2, 3, device=sa.device, dtype=sa.dtype) * 0.5
    scores, _, _ = score_angles(sa, ref, grid.reshape(b, -1), mode="bicubic")
    narrowed, _ = best_angle(grid.reshape(b * k, -1), scores.reshape(b * k, -1), 0.5,
                             circular=False)
    return narrowed.reshape(b, k)


class Sides(NamedTuple):
    """Full-resolution scores with exact sub-pixel peaks (``score``, ``tx``, ``ty``, each
    ``(R, 2)``) at ``FULL_OFFSETS`` from the angle :func:`choose` kept for pairs ``rows``
    ``(R,)``: the two outer angles of :meth:`GuidedSearch.polish`'s three, already scored."""

    rows: torch.Tensor
    score: torch.Tensor
    tx: torch.Tensor
    ty: torch.Tensor


def choose(a: torch.Tensor, full: Callable[[torch.Tensor], Reference], sa: torch.Tensor,
           ref: Reference, angles: torch.Tensor, scores: torch.Tensor, close: float = CLOSE,
           fine: bool = False
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Sides | None]:
    """Of candidate angles ``(B, C)`` with their scores at the search size (``sa`` against
    ``ref``), the one to keep ``(B,)`` and its index ``(B,)``. Where others score within
    ``close`` of the best (a share of its magnitude), the closest (at most ``CLOSE_MAX``) are
    each narrowed at the search size (+-1 deg in half steps) and compared at full resolution
    (``a`` against ``full(rows)``, the full-resolution reference of those pairs' rows, e.g.
    ``Reference.rows``; asked for only when some pair needs it, each at its better of the two
    angles 0.5 deg either side of it): the turns of a
    near-symmetric particle differ in fine detail that the search size loses. On the strict
    Table 2 test stacks, picking by the score at 64 px took the wrong turn for 41% of
    EMPIAR-10398's particles (C2 network) and 15% of GroEL's, the best of three angles 0.5 deg
    apart at full resolution for 2.3% and 1.3%, about as often as ``bruteforce`` (measured
    offline; the two outer angles of those three are what this compares); one
    full-resolution angle per turn (at the window's best) did not (GroEL: refine 15.8 deg
    against bruteforce's 2.1). The fallback's candidates are narrowed too: compared at the
    angles of its +-1.5 deg check, a network the trust check distrusts (every particle to the
    whole circle) put 29 of 1000 held-out EMPIAR-10398 particles on the wrong turn (9 of
    GroEL's; ``bruteforce`` 27 and 6), narrowed first 23 (GroEL 10).

    Also returns which pairs' angles it narrowed, and with ``fine`` their full-resolution
    scores with exact sub-pixel peaks (:class:`Sides`; at 14% more per angle than parabola
    peaks) for the polish to reuse (``None`` without ``fine`` or where nothing was told). On two
    sets of 1000 held-out particles (seeds 99 and 199, strict conditions) with the strict
    Table 2's C2 networks, the turns compared on exact peaks went wrong for 17 of GroEL's 2000
    particles (on parabola peaks 17, on each candidate's polished peak 16, ``bruteforce`` 16)
    and 45 of EMPIAR-10398's (parabola peaks 53, ``bruteforce`` 54), all through the shared
    pre-filter. Through the one a network's trust check chooses (``a`` and ``full`` may come
    through another pre-filter than ``sa`` and ``ref``;
    :func:`udl_align.aligners.network.turn_filter`), none of GroEL's 1000 (seed 99) went
    wrong."""
    pick = scores.argmax(dim=1)
    angle = angles.gather(1, pick[:, None])[:, 0].clone()
    near = _close(scores, close)
    told = near.sum(dim=1) > 1
    rows = told.nonzero()[:, 0]
    if rows.numel() == 0:
        return angle, pick, told, None
    top = scores[rows].topk(min(CLOSE_MAX, scores.shape[1]), dim=1).indices  # (R, K)
    cand, keep = angles[rows].gather(1, top), near[rows].gather(1, top)
    r, k = cand.shape
    narrowed = _narrow(sa[rows], ref.rows(rows), cand)
    grid = narrowed[:, :, None] + torch.tensor(FULL_OFFSETS, device=a.device, dtype=a.dtype)
    found = [v.reshape(r, k, -1) for v in score_angles(a[rows], full(rows), grid.reshape(r, -1),
                                                       mode="bicubic", fine=fine)]
    win = found[0].amax(dim=2).masked_fill(~keep, -torch.inf).argmax(dim=1)
    angle[rows] = narrowed.gather(1, win[:, None])[:, 0]
    pick[rows] = top.gather(1, win[:, None])[:, 0]
    every = torch.arange(r, device=a.device)
    sides = Sides(rows, *(v[every, win] for v in found)) if fine else None
    return angle, pick, told, sides


class GuidedSearch:
    def __init__(
        self,
        max_shift: int,
        span: float = 15.0,
        window_step: float = 2.0,
        search_size: int | None = 64,
        fallback_size: int | None = 48,
        fallback_step: float = 4.0,
        candidates: int = 6,
        verify: int = 1,
        verify_step: float = 1.5,
        polish_step: float = 0.5,
        walks: int = 1,
        probes: tuple[float, ...] = PROBES,
        half_turn: bool = False,
        close: float = CLOSE,
        low_share: float = LOW_SHARE,
        inner_span: float | None = INNER_SPAN,
        verify_mode: str = "bilinear",
        same_peak: float = 1.5,
    ) -> None:
        self.max_shift = int(max_shift)
        self.span = float(span)
        self.window_step = float(window_step)
        self.search_size = search_size
        self.fallback_size = fallback_size
        self.fallback_step = float(fallback_step)
        self.candidates = int(candidates)
        self.verify = int(verify)
        self.verify_step = float(verify_step)
        self.polish_step = float(polish_step)
        self.walks = int(walks)
        self.probes = tuple(float(p) for p in probes)
        self.half_turn = bool(half_turn)
        self.close = float(close)
        self.low_share = float(low_share)
        self.inner_span = None if inner_span is None else float(inner_span)
        self.verify_mode = verify_mode
        self.same_peak = float(same_peak)

    def __call__(self, a: torch.Tensor, b: torch.Tensor, prior: torch.Tensor,
                 unsure: torch.Tensor | None = None, turns: int = 1,
                 alike: bool = False,
                 full: tuple[torch.Tensor, torch.Tensor] | None = None) -> Estimate:
        """``a``, ``b`` pre-processed ``(B, N, N)``; ``prior`` ``(B,)`` degrees; ``unsure``
        ``(B,)`` bool: pairs whose prior is not to be trusted (they get the whole circle).
        ``turns``: the prior is known only modulo ``360 / turns`` (a network for a C_n
        particle, or a spectrum network's 180 deg). ``alike``: the turns look alike (a
        near-symmetric particle), so the window's best is scored turned by each turn; else
        each turn gets a window of its own (a spectrum network on a photograph, whose turns
        differ). ``half_turn``: a full-circle prior may also be half a turn off (a network
        that confuses the turns of a near-symmetric particle): its best is scored turned by
        180 deg too. The turns are told apart by :func:`choose`. ``full``: ``a`` and ``b``
        through another pre-filter for the stages at full resolution (the turns and the
        polish; e.g. the one a network's trust check chose to tell its turns apart)."""
        n = a.shape[-1]
        m = cropped_size(n, self.search_size)
        sa, sb = fourier_crop(a, m), fourier_crop(b, m)
        ref = prepare_reference(sb, self.max_shift * m / n)
        fa, fb = (a, b) if full is None else full
        full = prepare_reference(fb, self.max_shift)
        prior = prior.to(a.dtype)
        turns = max(int(turns), 1)
        step = 360.0 / turns
        # the prior's own turns get a window or a score of their own, not a probe
        probes = tuple(p for p in self.probes if abs(p / step - round(p / step)) > 1e-6)
        windows = [self.window(sa, ref, prior, probes)]
        found, edge, best, probed = windows[0]
        if alike or turns == 1:
            # the window's best turned by each turn, scored there: a near-symmetric particle's
            # turns peak at the same angle modulo the turn (one angle each where a window per
            # turn cost 16: the same errors on the strict Table 2 test stacks, 10-30% faster
            # for C2 networks)
            turns = max(turns, 2 if self.half_turn else 1)
            angles = found[:, None] + 360.0 / turns * torch.arange(turns, device=a.device,
                                                                    dtype=a.dtype)
            scores = best[:, None]
            if turns > 1:
                scores = torch.cat([scores, score_angles(sa, ref, angles[:, 1:],
                                                         mode="bicubic")[0]], 1)
            edges = torch.zeros_like(scores, dtype=torch.bool)
            edges[:, 0] = edge
        else:
            windows += [self.window(sa, ref, prior + k * step) for k in range(1, turns)]
            angles, edges, scores = (torch.stack([w[i] for w in windows], 1) for i in range(3))
        # the polish's outer angles are choose's (the same step either side): scored once
        reuse = FULL_OFFSETS == (-self.polish_step, self.polish_step)
        angle, _, narrowed, sides = choose(fa, full.rows, sa, ref, angles, scores, self.close,
                                           fine=reuse)
        best = scores.amax(dim=1)
        # the truth may lie outside the window: the window's best, if it is the chosen one or
        # close to it, peaks at its edge; a probe beats the best; or the best is far below the
        # batch's typical best
        outside = (edges & _close(scores, self.close)).any(dim=1) | (probed > best)
        typical = best.median()
        if self.low_share > 0 and best.numel() > 1 and typical > 0:
            outside |= best < self.low_share * typical
        need = outside if unsure is None else outside | unsure.to(outside.device)
        if need.any():
            rows = need.nonzero()[:, 0]
            angle[rows], narrowed[rows], found = self.fallback(
                a[rows], b[rows], sa[rows], ref.rows(rows), full.rows(rows), angle[rows],
                fa[rows], fine=reuse)
            if sides is not None:  # not those whose angle the fallback replaced
                kept = ~need[sides.rows]
                sides = Sides(*(v[kept] for v in sides))
            if found is not None:
                found = Sides(rows[found.rows], found.score, found.tx, found.ty)
                sides = found if sides is None else Sides(
                    *(torch.cat(v) for v in zip(sides, found, strict=True)))
        # still at the search size, where choose has not narrowed the angle already
        rows = (~narrowed).nonzero()[:, 0]
        if rows.numel():
            angle[rows] = _narrow(sa[rows], ref.rows(rows), angle[rows, None])[:, 0]
        return self.polish(fa, fb, angle, full, sides)

    def window(self, sa: torch.Tensor, ref: Reference, prior: torch.Tensor,
               probes: tuple[float, ...] = ()):
        """Best angle in ``prior +- span`` (``window_step`` grid, parabola), whether it sits
        at the window's edge (the truth may lie beyond), the window's best score, and the best
        score at ``probes`` (angles from the prior, e.g. a quarter turn: a gross error of the
        prior that the window alone cannot see; ``-inf`` where none). Each image is turned to
        its prior once; then one grid serves the batch: first +-``inner_span``, then the rest
        of the window for the pairs whose best lies at that part's edge (``INNER_SPAN``)."""
        k = int(round(self.span / self.window_step))
        grid = torch.arange(-k, k + 1, device=sa.device, dtype=sa.dtype) * self.window_step
        extra = torch.tensor(probes, device=sa.device, dtype=sa.dtype)
        warped = geometry.warp(sa, prior, mode="bicubic")
        inner = k if self.inner_span is None else min(k, int(round(self.inner_span
                                                                     / self.window_step)))
        first = grid[k - inner:k + inner + 1]
        found, _, _ = score_angles(warped, ref, torch.cat([first, extra]), chunk=90)
        near, probed = found[:, :first.shape[0]], found[:, first.shape[0]:]
        scores = torch.full((sa.shape[0], grid.shape[0]), -torch.inf, device=sa.device,
                            dtype=sa.dtype)
        scores[:, k - inner:k + inner + 1] = near
        if inner < k:  # the rest of the window where the inner part's best lies near its edge
            at = near.argmax(dim=1)
            rows = ((at <= 1) | (at >= first.shape[0] - 2)).nonzero()[:, 0]
            if rows.numel():
                rest = torch.cat([grid[:k - inner], grid[k + inner + 1:]])
                more, _, _ = score_angles(warped[rows], ref.rows(rows), rest, chunk=90)
                scores[rows, :k - inner] = more[:, :k - inner]
                scores[rows, k + inner + 1:] = more[:, k - inner:]
        best = scores.argmax(dim=1)
        edge = (best <= 1) | (best >= grid.shape[0] - 2)
        beyond = (probed.amax(dim=1) if probes
                  else torch.full_like(scores[:, 0], -torch.inf))
        angle, _ = best_angle(prior[:, None] + grid, scores, self.window_step, circular=False)
        return angle, edge, scores.amax(dim=1), beyond

    def fallback(self, a, b, sa, ref: Reference, full: Reference, window_best: torch.Tensor,
                 fa: torch.Tensor, fine: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, Sides | None]:
        """The whole circle, cheaply: coarse on small images, the best peaks (and the window's
        best) re-scored +-``verify`` deg at the search size, the closest told apart at full
        resolution (:func:`choose`; ``fa``, ``a`` through the full-resolution stages'
        pre-filter, against ``full``). Returns each pair's angle, whether :func:`choose`
        narrowed it, and with ``fine`` the scores of those for the polish (:class:`Sides`,
        rows of this subset)."""
        n = a.shape[-1]
        q = cropped_size(n, self.fallback_size)
        qa, qb = fourier_crop(a, q), fourier_crop(b, q)
        k = int(round(360.0 / self.fallback_step))
        circle = torch.arange(k, device=a.device, dtype=a.dtype) * (360.0 / k)
        coarse, _, _ = score_angles(qa, prepare_reference(qb, self.max_shift * q / n), circle,
                                    chunk=90)
        starts = torch.cat([circle[top_peaks(coarse, self.candidates)], window_best[:, None]], 1)
        offsets = torch.arange(-self.verify, self.verify + 1, device=a.device,
                               dtype=a.dtype) * self.verify_step
        grid = starts[:, :, None] + offsets
        scores, _, _ = score_angles(sa, ref, grid.flatten(1), mode=self.verify_mode)
        scores = scores.reshape(grid.shape)
        c, w = grid.shape[1], grid.shape[2]
        angles, _ = best_angle(grid.reshape(-1, w), scores.reshape(-1, w), self.verify_step,
                               circular=False)
        angles, best = angles.reshape(-1, c), scores.amax(dim=2)
        if self.same_peak > 0:
            best = _one_per_peak(angles, best, self.same_peak)
        angle, _, narrowed, sides = choose(fa, full.rows, sa, ref, angles, best, self.close,
                                           fine=fine)
        return angle, narrowed, sides

    def polish(self, a: torch.Tensor, b: torch.Tensor, angle: torch.Tensor,
               ref: Reference | None = None, sides: Sides | None = None) -> Estimate:
        """Full resolution, exact sub-pixel peaks at three angles ``polish_step`` apart; while
        the best is at an end, the three slide one step that way (at most ``walks`` times).
        ``ref``: ``b`` prepared at full resolution, if the caller has it; ``sides``: the outer
        two angles' scores of some pairs, scored already (:func:`choose`)."""
        step = self.polish_step
        ref = prepare_reference(b, self.max_shift) if ref is None else ref
        grid = angle[:, None] + torch.tensor([-step, 0.0, step], device=a.device, dtype=a.dtype)
        if sides is None or sides.rows.numel() == 0:
            score, tx, ty = score_angles(a, ref, grid, mode="bicubic", fine=True)
        else:
            score, tx, ty = (torch.empty_like(grid) for _ in range(3))
            fresh = torch.ones_like(angle, dtype=torch.bool)
            fresh[sides.rows] = False
            rows = fresh.nonzero()[:, 0]
            if rows.numel():
                found = score_angles(a[rows], ref.rows(rows), grid[rows], mode="bicubic",
                                     fine=True)
                for values, new in zip((score, tx, ty), found, strict=True):
                    values[rows] = new
            rows = sides.rows
            middle = score_angles(a[rows], ref.rows(rows), grid[rows, 1:2], mode="bicubic",
                                  fine=True)
            for values, outer, new in zip((score, tx, ty), sides[1:], middle, strict=True):
                values[rows] = torch.cat([outer[:, :1], new, outer[:, 1:]], 1)
        for _ in range(self.walks):
            side = score.argmax(dim=1) - 1  # -1, 0 or +1
            rows = side.nonzero()[:, 0]
            if rows.numel() == 0:
                break
            side = side[rows].to(a.dtype)[:, None]
            new_angle = grid[rows, 1:2] + 2.0 * side * step
            new = score_angles(a[rows], ref.rows(rows), new_angle, mode="bicubic", fine=True)
            for values, extra in zip((score, tx, ty), new, strict=True):
                values[rows] = _slide(values[rows], extra, side)
            grid[rows] = _slide(grid[rows], new_angle, side)
        best, _ = best_angle(grid, score, step, circular=False)
        u = (best - grid[:, 1]) / step  # where the peak is, in steps from the middle angle
        return Estimate.from_tensors(best, _quadratic(tx, u), _quadratic(ty, u),
                                     score.amax(dim=1))


def _one_per_peak(angles: torch.Tensor, scores: torch.Tensor, within: float) -> torch.Tensor:
    """``scores`` ``(B, C)`` with every candidate whose angle lies within ``within`` deg of a
    better-scoring one's set to ``-inf``: two starts that climbed to the same peak (the
    window's best and a coarse peak beside it) are one candidate, not two to tell apart."""
    gap = (angles[:, :, None] - angles[:, None, :] + 180.0).remainder(360.0) - 180.0
    other, this = scores[:, None, :], scores[:, :, None]
    index = torch.arange(scores.shape[1], device=scores.device)
    earlier = index[None, :] < index[:, None]  # of a tie, the first candidate counts
    better = (other > this) | ((other == this) & earlier)
    shadowed = (better & (gap.abs() <= within)).any(dim=2)
    return scores.masked_fill(shadowed, -torch.inf)


def _slide(triple: torch.Tensor, extra: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
    """``(l, m, r)`` with a new value beyond an end: ``(new, l, m)`` for side -1, else
    ``(m, r, new)``."""
    left = torch.cat([extra, triple[:, :2]], 1)
    right = torch.cat([triple[:, 1:], extra], 1)
    return torch.where(side < 0, left, right)


def _quadratic(values: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The parabola through ``values`` ``(B, 3)`` at -1, 0, 1, evaluated at ``u``."""
    left, mid, right = values.unbind(1)
    return mid + 0.5 * u * (right - left) + 0.5 * u * u * (right - 2.0 * mid + left)


__all__ = ["GuidedSearch", "Sides", "choose", "cropped_size"]
