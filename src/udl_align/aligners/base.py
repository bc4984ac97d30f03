"""One interface for every aligner: ``estimate(a, b) -> Estimate`` on batches, CPU or CUDA."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from udl_align import geometry
from udl_align.aligners.correlation import Preprocess, refine_prepared
from udl_align.errors import checked_device
from udl_align.filters import repair_impulses, to_tensor


@dataclass
class Estimate:
    """Per-pair result of an aligner: the transform taking ``a`` onto ``b`` and a score."""

    angle: np.ndarray
    tx: np.ndarray
    ty: np.ndarray
    score: np.ndarray

    @classmethod
    def from_tensors(cls, angle, tx, ty, score) -> Estimate:
        def arr(v):
            return v.detach().cpu().double().numpy()

        return cls(geometry.wrap360(arr(angle)), arr(tx), arr(ty), arr(score))

    @classmethod
    def concat(cls, parts: list[Estimate]) -> Estimate:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("angle", "tx", "ty", "score")))


class Aligner:
    """Base class. Subclasses implement :meth:`_estimate` on pre-processed ``(B, N, N)`` tensors.

    ``max_shift``: the largest shift searched, in pixels (``None``: ``N // 8``).
    ``lowpass``: Gaussian pre-filter, sigma as a fraction of Nyquist (``None``: off).
    ``impulses``: repair impulse noise first (:mod:`udl_align.filters`; only images that have
    it are touched).
    """

    name = "aligner"
    batch_size = 16  # pairs per call that suit the method on a CPU (measured)

    def __init__(
        self,
        max_shift: float | None = None,
        lowpass: float | None = 0.25,
        impulses: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        self.max_shift = max_shift
        self.impulses = bool(impulses)
        self.preprocess = Preprocess(lowpass)
        self.device = checked_device(device)  # a bad name is one line of input error

    def shift_range(self, n: int) -> int:
        s = n // 8 if self.max_shift is None else self.max_shift
        return int(math.ceil(min(max(s, 0), n // 2 - 4)))

    @torch.no_grad()
    def estimate(self, a, b) -> Estimate:
        """The transforms taking each ``a[i]`` onto ``b[i]`` (``apply(a, T) ~ b``)."""
        ta, tb = self.inputs(a, b)
        return self._estimate(self.preprocess(ta), self.preprocess(tb))

    def inputs(self, a, b) -> tuple[torch.Tensor, torch.Tensor]:
        """``a`` and ``b`` as ``(B, N, N)`` float32 tensors on the aligner's device, checked to
        be square images of one shape, their impulses repaired (:mod:`udl_align.filters`; once
        per image, for every stage that follows)."""
        ta, tb = to_tensor(a, self.device), to_tensor(b, self.device)
        if ta.shape != tb.shape:
            raise ValueError(f"a and b differ in shape: {tuple(ta.shape)} vs {tuple(tb.shape)}")
        if ta.shape[-1] != ta.shape[-2]:
            raise ValueError(f"images are not square: {tuple(ta.shape)}")
        if self.impulses:
            ta, tb = repair_impulses(ta), repair_impulses(tb)
        return ta, tb

    def _estimate(self, a: torch.Tensor, b: torch.Tensor) -> Estimate:
        raise NotImplementedError

    @torch.no_grad()
    def refine(self, a, b, initial, span: float = 3.0, step: float = 0.25) -> Estimate:
        """Narrow exhaustive search around ``initial`` angles (degrees), then the shift step."""
        ta, tb = self.inputs(a, b)
        init = torch.as_tensor(np.asarray(initial, np.float32), device=self.device).reshape(-1)
        pa, pb = self.preprocess(ta), self.preprocess(tb)
        out = refine_prepared(pa, pb, init, span, step, self.shift_range(ta.shape[-1]))
        return Estimate.from_tensors(*out)


def run_aligner(
    aligner: Aligner,
    a: np.ndarray,
    b: np.ndarray,
    batch_size: int | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> tuple[Estimate, np.ndarray]:
    """Align all pairs in batches (``None``: the aligner's own size); returns the estimates and
    the seconds spent per pair."""
    batch_size = batch_size or aligner.batch_size
    parts, seconds = [], []
    n = len(a)
    with tqdm(total=n, desc=desc or aligner.name, unit="pair", disable=not progress) as bar:
        for lo in range(0, n, batch_size):
            hi = min(n, lo + batch_size)
            start = time.perf_counter()
            parts.append(aligner.estimate(a[lo:hi], b[lo:hi]))
            if aligner.device.type == "cuda":
                torch.cuda.synchronize(aligner.device)
            elapsed = time.perf_counter() - start
            seconds.append(np.full(hi - lo, elapsed / (hi - lo)))
            bar.update(hi - lo)
    return Estimate.concat(parts), np.concatenate(seconds)


def run_side_by_side(
    aligners: dict[str, Aligner],
    a: np.ndarray,
    b: np.ndarray,
    chunk: int = 64,
    repeats: int = 1,
    progress: bool = True,
    desc: str | None = None,
) -> dict[str, tuple[Estimate, np.ndarray]]:
    """Every aligner on the same pairs, taking turns a ``chunk`` of pairs at a time (each in its
    own batch size), so the slow and fast spells of a shared machine fall on all of them alike:
    run one after the other, the same method's pairs/s varied by +-20% here. With ``repeats``
    each chunk is timed that many times and the fastest counts (as ``timeit`` does: the slower
    runs measure other programs). Returns ``{name: (estimates, seconds per pair)}``."""
    parts: dict[str, tuple[list, list]] = {name: ([], []) for name in aligners}
    n = len(a)
    # one untimed round first (as timeit's warm-up): the first method timed ran 20-30% slower
    # on the first chunk here (allocator and caches cold), whichever condition came first
    for aligner in aligners.values():
        run_aligner(aligner, a[:chunk], b[:chunk], progress=False)
    with tqdm(total=n, desc=desc or "side by side", unit="pair", disable=not progress) as bar:
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            for name, aligner in aligners.items():
                runs = [run_aligner(aligner, a[lo:hi], b[lo:hi], progress=False)
                        for _ in range(max(1, repeats))]
                parts[name][0].append(runs[0][0])
                parts[name][1].append(min((r[1] for r in runs), key=np.sum))
            bar.update(hi - lo)
    return {name: (Estimate.concat(e), np.concatenate(s)) for name, (e, s) in parts.items()}
