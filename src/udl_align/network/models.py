"""The UDL network of the paper (Sect. 3.3), with configurable widths, and its presets.

``(I1, I2) -> angle``: a mask-prediction module (each image multiplied by its own mask), a
feature extractor of bottleneck residual blocks with 2x max-pooling, a normalised correlation
layer computed in both directions (siamese, shared weights) followed by two conv blocks, and a
three-layer fully connected head. The head gives either one number (``head="scalar"``: the
paper's angle in degrees) or a 2-vector read back with ``atan2`` (``head="vector"``: no seam at
0/360, see ``design.md``), or, for the STN baseline, rigid parameters (angle vector and shift).

Beyond the paper, a **residual stage** (:class:`ResidualStage`, ``NetConfig.residual``) may
follow a vector head: the second image's features at twice the final resolution are turned
back by the head's angle, and a local correlation with the first image's gives a correction of
a few degrees. The 8x8 features that the head correlates limit its precision (its errors are
its own: an exhaustive search on the same 64 px inputs finds clean pairs to 0.02 deg); the
stage sees what is left after the head's turn, a displacement of a fraction of a cell.

Every setting lives in :class:`NetConfig`, which is stored in the checkpoint beside the weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from udl_align import geometry

HEADS = ("scalar", "vector", "rigid")


@dataclass
class NetConfig:
    size: int = 64  # input size in pixels (images of other sizes are resampled to it)
    mask_channels: tuple[int, ...] = (4, 8, 16, 32)  # conv blocks of the mask module
    # the mask module works on the image averaged down by this factor and its mask is
    # upsampled back (bilinear): at full resolution it costs ~80% of the cpu preset's time
    mask_stride: int = 2
    channels: tuple[int, ...] = (16, 32, 64, 128)  # output channels of the residual blocks
    # 2x max-pool after each block: 64 px -> stem 32 -> 16 -> 8 -> 8 -> 8, so 8x8 features
    # (4x4 ones, one more pool, reached 10.6 deg against 8.4 on held training pairs after the
    # same 60 minutes)
    pools: tuple[bool, ...] = (True, True, False, False)
    stem_pool: bool = True  # 2x max-pool before the first block (about 3x faster on CPU)
    match_channels: tuple[int, int] = (64, 32)  # the two conv blocks after the correlation
    fc: tuple[int, int] = (512, 512)  # hidden widths of the head
    head: str = "vector"
    fc_activation: bool = True  # the authors' code has none between its FC layers
    # "image", or "spectrum": the network sees log(1 + |FFT|) of each image (the paper's choice
    # for cryo-EM: shifts drop out), and then knows the angle only modulo 180
    input: str = "image"
    # Gaussian low-pass of the resampled input, sigma as a fraction of its Nyquist (0: none).
    # Rotating white noise by interpolation smooths it by an amount that depends on the angle;
    # at SNR 0.1 that pattern told the network each image's disturbance angle (training loss
    # 23 deg, validation at chance). Only low frequencies, which interpolate nearly exactly,
    # pass this filter.
    input_lowpass: float = 0.0
    # in-plane symmetry order n of the particle (C_n: GroEL's side views are C2): its turns by
    # 360/n look alike, so on the full circle UDL's targets are a coin toss between n angles and
    # it learns nothing. The network learns the angle modulo 360/n (its head's angle is n times
    # the rotation) and the aligner tells the n candidates apart by correlation.
    symmetry: int = 1
    # how a C_n network's head gives n times the rotation: "direct", its 2-vector's angle is
    # that multiple itself; "power", its angle is the rotation, multiplied by n after (the
    # head of a full-circle network starts right). A power head cannot be continuous: turning
    # an exactly C_n image by 360/n must bring its rotation back to itself while adding 360/n,
    # so somewhere on every particle's circle of turns the head must jump or pass through zero
    # length. On GroEL (paper protocol, 6 minutes, the same stack and search poses) the power
    # head's training loss spiked and stalled (one answer, modulo 180: 3.69 deg mean), the
    # direct one fell smoothly (1.61; one with both parts: 1.62). Checkpoints from before the
    # option hold power heads.
    symmetric_head: str = "direct"
    # how the trained network aligns (``NetworkAligner.test_turns``): its angle is the circular
    # mean of its answers for the second image and its quarter turns (1: one answer; 2; 4)
    test_turns: int = 1
    # a fine stage after the head (:class:`ResidualStage`; empty: none): the channels of its
    # conv blocks. It turns the second image's features at twice the feature resolution back
    # by the head's angle, correlates them with the first image's within
    # ``residual_radius`` cells, and adds a correction of at most ``residual_range`` degrees
    residual: tuple[int, ...] = ()
    residual_radius: int = 2
    # a 1x1 convolution first takes the fine features to this many channels (0: none)
    residual_project: int = 0
    residual_range: float = 15.0
    # the head's offset C (deg): its angle less this is the rotation it turns back by
    residual_offset: float = 0.0
    # times the stage is applied, each time turning back by the angle the last one gave
    residual_steps: int = 1
    # train the fine stage alone, the rest frozen (so that its offset stays residual_offset)
    residual_only: bool = False

    @property
    def angle_factor(self) -> int:
        """The head's angle is this multiple of the rotation: the symmetry order, times 2 for
        spectra, whose period is 180 deg (their outputs live on the doubled circle)."""
        return self.symmetry * (2 if self.input == "spectrum" else 1)

    @property
    def feature_size(self) -> int:
        s = self.size // (2 if self.stem_pool else 1)
        for p in self.pools:
            s //= 2 if p else 1
        return s

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> NetConfig:
        names = {f for f in cls.__dataclass_fields__}
        clean = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names}
        clean.setdefault("mask_stride", 1)  # checkpoints from before the option: full resolution
        clean.setdefault("symmetric_head", "power")  # and the head they were trained with
        cfg = cls(**clean)
        if cfg.input not in INPUTS:
            raise ValueError(f"unknown network input '{cfg.input}' (expected one of "
                             f"{', '.join(INPUTS)})")
        if not isinstance(cfg.symmetry, int) or cfg.symmetry < 1:
            raise ValueError(f"symmetry must be a whole number >= 1, got {cfg.symmetry}")
        if cfg.symmetry > 1 and cfg.head == "rigid":
            raise ValueError("a rigid (STN) head cannot take a symmetry order")
        if cfg.residual and (cfg.head != "vector" or cfg.angle_factor != 1):
            raise ValueError("a residual stage needs a full-circle vector head on images")
        if not isinstance(cfg.residual_steps, int) or cfg.residual_steps < 1:
            raise ValueError(f"residual steps must be a whole number >= 1, got "
                             f"{cfg.residual_steps}")
        if cfg.symmetric_head not in SYMMETRIC_HEADS:
            raise ValueError(f"unknown symmetric head '{cfg.symmetric_head}' (expected one of "
                             f"{', '.join(SYMMETRIC_HEADS)})")
        return cfg


INPUTS = ("image", "spectrum")
SYMMETRIC_HEADS = ("direct", "power")

PRESETS: dict[str, NetConfig] = {
    # the paper: 128 px, full width, one scalar output, FC 2000-2000-1 (for a GPU)
    "paper": NetConfig(
        size=128,
        mask_channels=(4, 8, 16, 32),
        mask_stride=1,
        channels=(32, 64, 128, 256),
        pools=(True, True, True, True),
        stem_pool=False,
        match_channels=(128, 64),
        fc=(2000, 2000),
        head="scalar",
        fc_activation=False,
    ),
    # the default: small enough to train on 2 CPU cores in tens of minutes
    "cpu": NetConfig(),
}


def preset(name: str, **overrides) -> NetConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}' (expected one of {', '.join(PRESETS)})")
    base = asdict(PRESETS[name])
    base.update(overrides)
    return NetConfig.from_dict(base)


def conv_block(cin: int, cout: int, act: nn.Module | None = None) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        act if act is not None else nn.ReLU(inplace=True),
    )


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 convolutions (BN, ReLU between) plus a 1x1 conv + BN shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = max(cout // 4, 4)
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class MaskModule(nn.Module):
    """Conv blocks ending in a 1-channel sigmoid: where the image carries the signal. With
    ``stride`` > 1 they see the image averaged down by ``stride`` (a mask is smooth)."""

    def __init__(self, channels: tuple[int, ...], stride: int = 1) -> None:
        super().__init__()
        self.stride = int(stride)
        layers, cin = [], 1
        for c in channels:
            layers.append(conv_block(cin, c))
            cin = c
        layers.append(conv_block(cin, 1, nn.Sigmoid()))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return self.net(x)
        mask = self.net(F.avg_pool2d(x, self.stride))
        return upsample_one_channel(mask, x.shape[-2:])


def upsample_one_channel(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resampling of one-channel maps ``(B, 1, h, w)`` to ``size``: the batch is
    resampled as the channels of one map, the same numbers in 40% of the time (2 cores, 64
    masks of 16 px to 64 px), where the one-channel batch takes a slow path."""
    b = x.shape[0]
    out = F.interpolate(x.reshape(1, b, *x.shape[-2:]), size=tuple(size), mode="bilinear",
                        align_corners=False)
    return out.reshape(b, 1, *out.shape[-2:])


class MaxPool2(nn.MaxPool2d):
    """2x max-pooling; on one-channel maps without gradients, the maximum of the even and
    odd rows, then columns: the same numbers in a tenth of the time (the image itself, which
    the stem pools: 64 images of 64 px took 1 ms on 2 cores)."""

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if c != 1 or torch.is_grad_enabled() or h % 2 or w % 2:
            return super().forward(x)
        v = x.reshape(b, h, w)
        rows = torch.maximum(v[:, 0::2], v[:, 1::2])
        return torch.maximum(rows[..., 0::2], rows[..., 1::2]).reshape(b, 1, h // 2, w // 2)


class FromOneChannel(nn.Module):
    """A 1x1 convolution of a one-channel map, as it is: a scale and a bias per output
    channel, computed in channels-last layout (64 maps of 32 px to 16 channels: 0.14 ms on 2
    cores, the convolution 1.25 ms: it takes a slow path for one input channel). Made by
    :func:`fused_for_inference`."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        out = conv.out_channels
        self.register_buffer("weight", conv.weight.detach().reshape(out).clone())
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(out)
        self.register_buffer("bias", bias.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        return torch.addcmul(self.bias, x.reshape(b, h, w, 1), self.weight).permute(0, 3, 1, 2)


class FeatureExtractor(nn.Module):
    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [MaxPool2()] if cfg.stem_pool else []
        cin = 1
        for cout, pool in zip(cfg.channels, cfg.pools, strict=True):
            layers.append(Bottleneck(cin, cout))
            if pool:
                layers.append(MaxPool2())
            cin = cout
        self.net = nn.Sequential(*layers)
        pooled = [i for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]
        # the features at twice the final resolution: what enters the last pooling
        self.last_pool = pooled[-1] if pooled else None
        pooling = [c for c, p in zip(cfg.channels, cfg.pools, strict=True) if p]
        self.fine_channels = pooling[-1] if pooling else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def with_fine(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The features and those at twice their resolution (the last pooling's input)."""
        if self.last_pool is None:
            raise ValueError("a residual stage needs a pooling in the feature extractor")
        fine = self.net[:self.last_pool](x)
        return self.net[self.last_pool:](fine), fine


def local_correlation(fa: torch.Tensor, fb: torch.Tensor, radius: int) -> torch.Tensor:
    """``(B, C, h, w) x 2 -> (B, (2r+1)^2, h, w)``: the similarity of ``fa`` at each cell
    with ``fb`` displaced by up to ``radius`` cells each way (zero beyond the edge); features
    ReLU'd and L2-normalised over channels first, as :func:`normalised_correlation`."""
    return correlate_nearby(unit_features(fa), fb, radius)


def unit_features(f: torch.Tensor) -> torch.Tensor:
    """Features ReLU'd and L2-normalised over their channels."""
    return F.normalize(F.relu(f), dim=1)


#: :func:`correlate_nearby` works through this many pairs at a time: their features stay in
#: the cache across the displacements (about 10% less time than 64 pairs at once, 2 cores)
NEARBY_CHUNK = 16


def correlate_nearby(ua: torch.Tensor, fb: torch.Tensor, radius: int) -> torch.Tensor:
    """:func:`local_correlation` of features ``ua`` already through :func:`unit_features`
    (what every pass of a residual stage compares with) and raw features ``fb``."""
    # both in one memory layout: a product of a channels-last tensor with a contiguous one
    # took twice as long (a warp returns contiguous features of channels-last ones)
    layout = (torch.channels_last if ua.is_contiguous(memory_format=torch.channels_last)
              else torch.contiguous_format)
    h, w = ua.shape[-2:]
    k = 2 * radius + 1
    out = []
    for lo in range(0, ua.shape[0], NEARBY_CHUNK):
        a = ua[lo:lo + NEARBY_CHUNK]
        b = fb[lo:lo + NEARBY_CHUNK].contiguous(memory_format=layout)
        b = F.pad(unit_features(b), (radius,) * 4)
        out.append(torch.stack([(a * b[..., dy:dy + h, dx:dx + w]).sum(dim=1)
                                for dy in range(k) for dx in range(k)], dim=1))
    return out[0] if len(out) == 1 else torch.cat(out)


class ResidualStage(nn.Module):
    """A correction of the head's angle: the second image's fine features turned back by the
    head's angle (its offset C removed), so that what is left between the two is the head's
    error, a displacement of a fraction of a cell that grows with the radius; their local
    correlation, conv blocks, and a linear layer give the correction in degrees (at most
    ``residual_range``; zero at initialisation, so the stage starts as the head alone)."""

    def __init__(self, cfg: NetConfig, channels: int, size: int) -> None:
        super().__init__()
        self.radius, self.range, self.offset = cfg.residual_radius, cfg.residual_range, \
            cfg.residual_offset
        self.project = (nn.Conv2d(channels, cfg.residual_project, 1) if cfg.residual_project
                        else nn.Identity())
        blocks, cin = [], (2 * cfg.residual_radius + 1) ** 2
        for c in cfg.residual:
            blocks.append(conv_block(cin, c))
            cin = c
        self.convs = nn.Sequential(*blocks, nn.AvgPool2d(2))
        self.out = nn.Linear(cin * (size // 2) ** 2, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, fa: torch.Tensor, fb: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
        """The correction (deg, ``(B,)``) for fine features ``fa``, ``fb`` and the head's
        angle ``angle`` (deg, offset C included)."""
        return self.correct(*self.prepare(fa, fb), angle)

    def prepare(self, fa: torch.Tensor, fb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What every pass of the stage takes from fine features ``fa``, ``fb``: ``fa``
        projected and through :func:`unit_features`, ``fb`` projected."""
        return unit_features(self.project(fa)), self.project(fb)

    def correct(self, ua: torch.Tensor, pb: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` of features from :meth:`prepare`."""
        back = geometry.warp(pb, -(angle.detach() - self.offset))
        x = self.convs(correlate_nearby(ua, back, self.radius))
        return self.range * torch.tanh(self.out(x.flatten(1))[:, 0] / self.range)


def normalised_correlation(fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
    """Rocco et al.'s matching layer: ``(B, C, h, w) x 2 -> (B, h*w, h, w)``.

    Channel ``i*w + j`` holds the similarity of ``fa`` at ``(i, j)`` with ``fb`` everywhere;
    features are ReLU'd and L2-normalised first, the map is ReLU'd and L2-normalised over its
    channels after.
    """
    b, c, h, w = fa.shape
    fa = F.normalize(F.relu(fa), dim=1).reshape(b, c, h * w)
    fb = F.normalize(F.relu(fb), dim=1).reshape(b, c, h * w)
    corr = torch.bmm(fa.transpose(1, 2), fb).reshape(b, h * w, h, w)
    return F.normalize(F.relu(corr), dim=1)


class AlignNet(nn.Module):
    """``forward(a, b)``: the raw head output (``losses.angle_of`` reads it as degrees)."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        if cfg.head not in HEADS:
            raise ValueError(f"unknown head '{cfg.head}' (expected one of {', '.join(HEADS)})")
        self.cfg = cfg
        self.mask = MaskModule(cfg.mask_channels, cfg.mask_stride)
        self.features = FeatureExtractor(cfg)
        s = cfg.feature_size
        if s < 1:
            raise ValueError(f"input size {cfg.size} is too small for this many poolings")
        self.match = nn.Sequential(
            conv_block(s * s, cfg.match_channels[0]),
            conv_block(cfg.match_channels[0], cfg.match_channels[1]),
        )
        flat = 2 * cfg.match_channels[1] * s * s
        out = {"scalar": 1, "vector": 2, "rigid": 4}[cfg.head]
        act = [nn.ReLU(inplace=True)] if cfg.fc_activation else []
        self.head = nn.Sequential(
            nn.Linear(flat, cfg.fc[0]), *act,
            nn.Linear(cfg.fc[0], cfg.fc[1]), *act,
            nn.Linear(cfg.fc[1], out),
        )
        for m in self.modules():  # Kaiming initialisation, as the authors
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.residual = None
        if cfg.residual:
            self.residual = ResidualStage(cfg, self.features.fine_channels, 2 * s)
        # the residual stage's passes in :meth:`compare` (an aligner may set 0: the head
        # alone, which then costs what it cost without the stage)
        self.residual_steps = cfg.residual_steps if cfg.residual else 0
        if cfg.residual_only:
            for module in self.coarse():
                module.requires_grad_(False)

    def coarse(self) -> list[nn.Module]:
        """The modules before the residual stage."""
        return [self.mask, self.features, self.match, self.head]

    def train(self, mode: bool = True) -> AlignNet:
        super().train(mode)
        if self.cfg.residual_only:  # frozen: their batch norms keep their statistics
            for module in self.coarse():
                module.eval()
        return self

    def embed(self, x: torch.Tensor):
        """The features of images ``x`` that :meth:`compare` takes (where the residual stage
        runs, a pair: the features and the fine ones)."""
        x = x[:, None] if x.dim() == 3 else x
        x = x * self.mask(x)
        return self.features.with_fine(x) if self.residual_steps else self.features(x)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.compare(self.embed(a), self.embed(b))

    def compare(self, fa, fb) -> torch.Tensor:
        """The head's output for two images' features (:meth:`embed`): what ``forward``
        gives once each image is embedded, so an image compared with several others is
        embedded once."""
        if self.residual_steps:
            (fa, fine_a), (fb, fine_b) = fa, fb
            fine_a, fine_b = self.residual.prepare(fine_a, fine_b)  # once for every pass
        # both directions through the match in one call (half the calls of small convolutions)
        ab, ba = self.match(torch.cat([normalised_correlation(fa, fb),
                                       normalised_correlation(fb, fa)])).chunk(2)
        out = self.head(torch.cat([ab.flatten(1), ba.flatten(1)], dim=1))
        for _ in range(self.residual_steps):
            angle = torch.rad2deg(torch.atan2(out[:, 1], out[:, 0]))
            turn = torch.deg2rad(self.residual.correct(fine_a, fine_b, angle))
            c, s = torch.cos(turn), torch.sin(turn)
            out = torch.stack([c * out[:, 0] - s * out[:, 1], s * out[:, 0] + c * out[:, 1]], 1)
        if self.cfg.symmetric_head == "direct":
            return out
        return multiply_angle(out, self.cfg.symmetry, self.cfg.head)


def multiply_angle(out: torch.Tensor, n: int, head: str) -> torch.Tensor:
    """The head's output with its angle multiplied by ``n`` (a 2-vector keeps its length, the
    network's confidence)."""
    if n == 1:
        return out
    if head == "scalar":
        return out * n
    turned = torch.polar(out[:, :2].norm(dim=1), n * torch.atan2(out[:, 1], out[:, 0]))
    return torch.stack([turned.real, turned.imag], dim=1)


def to_device(model: AlignNet, device: torch.device) -> AlignNet:
    """``model`` moved to ``device`` (in place); on a CPU also into channels-last layout, where
    oneDNN's convolutions and pools run faster (2 cores: inference ~25%, a training step ~20%;
    the same outputs)."""
    model.to(device)
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    return model


def fused_for_inference(model: AlignNet) -> AlignNet:
    """A copy of ``model`` in eval mode with every BatchNorm folded into the convolution
    before it (same outputs up to rounding; about 10% faster on CPU). Not for training."""
    from copy import deepcopy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for first, second in zip(names, names[1:], strict=False):
                conv, bn = module._modules[first], module._modules[second]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module._modules[first] = fuse_conv_bn_eval(conv, bn)
                    module._modules[second] = nn.Identity()
            for name, conv in module._modules.items():
                if (isinstance(conv, nn.Conv2d) and conv.in_channels == 1
                        and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
                        and conv.padding in ((0, 0), "valid") and conv.groups == 1):
                    module._modules[name] = FromOneChannel(conv)
    return fused


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["NetConfig", "PRESETS", "preset", "AlignNet", "count_parameters", "to_device",
           "fused_for_inference"]
