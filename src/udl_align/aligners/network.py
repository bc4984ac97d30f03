"""The UDL aligner: the network's angle (offset C removed), then the shared shift step, or with
``refine`` the narrow exhaustive search around the network's angle at full resolution.

The network sees each image resampled to its own input size (bilinear with antialiasing,
standardised, masked: :func:`udl_align.training.prepare_input`); the shift and the refinement
work on the original images.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InputError
from ..models import AlignNet
from .base import Aligner
from .bruteforce import BruteForce
from .correlation import Estimate, prepare_reference, shift_step, to_tensor

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_MODEL = WEIGHTS / "natural_cpu.pt"


def resolve_model_path(name: str | Path) -> Path:
    """``default`` names the model shipped in the package; anything else is a path."""
    if str(name) == "default":
        if not DEFAULT_MODEL.exists():
            raise InputError("the default model is not installed with this package",
                             DEFAULT_MODEL)
        return DEFAULT_MODEL
    return Path(name)


class NetworkAligner(Aligner):
    name = "network"

    def __init__(
        self,
        model: AlignNet,
        offset: float = 0.0,
        refine: bool = False,
        refine_span: float = 15.0,
        candidates: int = 1,
        device: str | torch.device = "cpu",
        **kwargs,
    ) -> None:
        super().__init__(device=device, **kwargs)
        self.model = model.to(self.device).eval()
        self.offset = float(offset)
        self.refine_enabled = bool(refine)
        self.refine_span = float(refine_span)
        self.name = "network+refine" if refine else "network"
        # the refinement is the exhaustive search restricted to a window around the network
        # (one coarse candidate: inside a narrow window the runner-up basins that the full
        # circle needs are rare, and each candidate costs a full-resolution search)
        self.search = BruteForce(max_shift=self.max_shift, lowpass=self.preprocess.lowpass,
                                 device=device, candidates=candidates)

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> NetworkAligner:
        from ..training import load_checkpoint, model_from_checkpoint

        path = resolve_model_path(path)
        state = load_checkpoint(path)
        offset = state.get("offset")
        if offset is None:
            raise InputError("checkpoint has no offset C: calibrate it first "
                             "(udl-align train writes one at the end)", path)
        return cls(model_from_checkpoint(state, path), offset=offset, **kwargs)

    @torch.no_grad()
    def network_angles(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        from ..training import predict_angles, prepare_input

        size = self.model.cfg.size
        raw = predict_angles(self.model, prepare_input(a, size), prepare_input(b, size))
        return torch.remainder(raw - self.offset, 360.0)

    @torch.no_grad()
    def estimate(self, a, b) -> Estimate:
        ta, tb = to_tensor(a, self.device), to_tensor(b, self.device)
        if ta.shape != tb.shape:
            raise ValueError(f"a and b differ in shape: {tuple(ta.shape)} vs {tuple(tb.shape)}")
        if ta.shape[-1] != ta.shape[-2]:
            raise ValueError(f"images are not square: {tuple(ta.shape)}")
        angle = self.network_angles(ta, tb)
        pa, pb = self.preprocess(ta), self.preprocess(tb)
        s = self.shift_range(ta.shape[-1])
        if self.refine_enabled:
            return self.search.search(pa, pb, centre=angle, half_width=self.refine_span)
        # parabola peaks: the network's angle is a few degrees off, which costs far more shift
        # accuracy than the parabola's bias; exact peaks would double the time
        tx, ty, score = shift_step(pa, pb, angle, s, prepare_reference(pb, s), fine=False)
        return Estimate.from_tensors(angle, tx, ty, score)


__all__ = ["NetworkAligner", "resolve_model_path", "DEFAULT_MODEL"]
