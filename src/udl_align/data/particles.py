"""Synthetic cryo-EM particles with known transforms (``udl-align synth cryoem``).

From a template (a 2D class average as PNG/MRC, or a 3D map projected along one seeded random
direction), for every particle:

1. the template, resampled to ``size`` (bilinear with antialiasing), has its background level
   (median of the outer ring) removed and is cut out by a soft circular mask whose radius comes
   from its radial profile (:func:`isolate`): the *reference*;
2. a smooth random background (Gaussian-filtered white noise, a new one per particle, standard
   deviation ``background`` times the particle's) is added around the particle moved by
   ``T = (angle, tx, ty)``: angle uniform in [0, 360), integer shifts uniform in
   ``[-max_shift, max_shift]`` (cubic spline, the ``geometry`` convention: ``apply(reference,
   T)`` is the particle);
3. optionally filtered by ``|CTF|`` (300 kV, Cs 2.7 mm, amplitude contrast 0.1, one defocus per
   particle uniform in 0.5-2 um; phase-flipped data, as the paper's);
4. Gaussian noise of variance ``var(clean) / snr`` is added, the variance measured inside the
   particle's moved mask (``snr_over="particle"``, the default) or over the whole image
   (``snr_over="image"``: the paper's definition; for a particle that fills a fraction of the
   box the SNR inside it is then several times higher).

Geometry and noise use separate seeded streams, as ``synth natural``. Particles are made and
written in chunks, so memory does not grow with their number.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial.transform import Rotation
from torch.nn import functional as F

from udl_align import geometry
from udl_align.data.ctf import apply_ctf
from udl_align.errors import InputError
from udl_align.io.images import read_image
from udl_align.io.mrc import read_mrc, read_mrc_header

#: where the SNR of ``synth cryoem`` is measured: inside the particle's mask (ours), or over
#: the whole image (the paper's)
SNR_OVER = ("particle", "image")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MRC_SUFFIXES = (".mrc", ".mrcs", ".map")
#: A per pixel of a template that records none (PNG), at its own size: a typical sampling of
#: class averages; it only matters for the CTF (``load_template``'s ``pixel_size`` sets it)
ASSUMED_PIXEL_SIZE = 2.0


@dataclass
class Template:
    reference: np.ndarray  # the isolated particle, background 0, (N, N) float32
    mask: np.ndarray  # its soft mask (N, N)
    radius: float  # the mask's radius in pixels
    pixel_size: float  # A per pixel at size N
    info: dict = field(default_factory=dict)  # source, projection direction, resampling


def resample(image: np.ndarray, size: int) -> np.ndarray:
    """Square image to ``size x size`` (bilinear with antialiasing, as the network's inputs)."""
    if image.shape[-1] == size:
        return image.astype(np.float32)
    x = torch.as_tensor(image, dtype=torch.float32)[None, None]
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)[0, 0].numpy()


def project(volume: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Sum of a cubic map along a direction drawn uniformly on the sphere (linear
    interpolation); returns the projection and the ZYZ Euler angles (degrees) used."""
    rot = Rotation.random(random_state=rng)
    n = volume.shape[0]
    c = np.full(3, n // 2, float)
    m = rot.as_matrix()
    turned = ndimage.affine_transform(volume, m, offset=c - m @ c, order=1)
    euler = rot.as_euler("ZYZ", degrees=True)
    return turned.sum(axis=0), {"euler_zyz_deg": [float(v) for v in euler]}


def isolate(image: np.ndarray, max_shift: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """The particle of a centred class average on a zero background, its soft mask and radius.

    Background = the median of the outer ring (radius > 0.45 N). The radius is where the
    radial mean of the smoothed ``|image - background|`` last exceeds the outer ring's level
    plus 20% of its peak above it, kept within ``[N/8, N/2 - max_shift - 2]`` so the moved
    particle stays in the box. The mask's edge is ``N/32`` px wide (cosine).
    """
    n = image.shape[-1]
    yy, xx = geometry.centred_grid(n)
    r = np.hypot(yy, xx)
    ring = r > 0.45 * n
    centred = image - np.median(image[ring])
    smooth = ndimage.gaussian_filter(np.abs(centred), max(n / 64, 1.0))
    bins = np.minimum(r.astype(int), n // 2)
    profile = np.bincount(bins.ravel(), smooth.ravel()) / np.maximum(np.bincount(bins.ravel()), 1)
    floor = float(np.mean(smooth[ring]))
    above = np.nonzero(profile > floor + 0.2 * (profile.max() - floor))[0]
    radius = float(above.max()) if above.size else n / 4
    edge = max(n / 32, 1.0)
    radius = float(np.clip(radius + edge, n / 8, n / 2 - max_shift - 2))
    mask = geometry.soft_circular_mask(n, radius, edge=edge).astype(np.float32)
    return (centred * mask).astype(np.float32), mask, radius


def load_template(
    path: str | Path, size: int, pixel_size: float | None = None, max_shift: int = 10,
    seed: int = 0,
) -> Template:
    """Read a 2D class average (PNG/JPEG/TIFF or MRC) or a 3D map (MRC, projected along a
    seeded random direction), resample it to ``size`` and isolate the particle."""
    path = Path(path)
    suffix = path.suffix.lower()
    info: dict = {"template": path.name}
    header_pixel = None
    if suffix in IMAGE_SUFFIXES:
        image = read_image(path)
    elif suffix in MRC_SUFFIXES:
        data = read_mrc(path)
        header_pixel = read_mrc_header(path).voxel_size or None
        if data.ndim == 3 and data.shape[0] == 1:
            data = data[0]
        if data.ndim == 3:
            if len(set(data.shape)) != 1:
                raise InputError(f"a 3D map must be cubic, got shape {data.shape}", path)
            data, view = project(data, np.random.default_rng([seed, 2]))
            info["projection"] = view
        image = data
    else:
        raise InputError("template must be PNG/JPEG/TIFF or MRC (a class average or a map)",
                         path)
    if image.ndim != 2 or image.shape[0] != image.shape[1]:
        raise InputError(f"template is not a square image (shape {image.shape})", path)
    if float(np.std(image)) == 0.0:
        raise InputError("template is blank (constant)", path)
    native = image.shape[-1]
    base = pixel_size if pixel_size is not None else header_pixel
    if base is None:
        base = ASSUMED_PIXEL_SIZE  # PNG class averages carry none: say so in the record
        info["pixel_size_assumed"] = True
    scaled = base * native / size if pixel_size is None else float(pixel_size)
    info.update(native_size=native, size=size)
    reference, mask, radius = isolate(resample(image, size), max_shift)
    return Template(reference, mask, radius, scaled, info)


@dataclass
class ParticleBatch:
    images: np.ndarray  # (k, N, N) float32, noisy
    angle: np.ndarray  # the transform taking the reference onto each particle
    tx: np.ndarray
    ty: np.ndarray
    defocus_um: np.ndarray  # NaN without CTF
    clean: np.ndarray | None = None  # before noise (with keep_clean)
    masks: np.ndarray | None = None  # where the SNR was measured (with keep_clean)


class ParticleSynth:
    """Seeded particles from a :class:`Template`; :meth:`chunks` yields them in batches."""

    def __init__(
        self,
        template: Template,
        snr: float | Sequence[float] = 0.1,
        max_shift: int = 10,
        ctf: bool = False,
        background: float = 0.1,
        defocus_um: tuple[float, float] = (0.5, 2.0),
        seed: int = 0,
        snr_over: str = "particle",
    ) -> None:
        snrs = np.atleast_1d(np.asarray(snr, np.float64))
        if snrs.size == 0 or not np.all(snrs > 0):
            raise InputError(f"the SNR must be positive, got {snr}")
        if max_shift < 0:
            raise InputError(f"the largest shift must be >= 0 px, got {max_shift}")
        if background < 0:
            raise InputError(f"the background level must be >= 0, got {background}")
        if snr_over not in SNR_OVER:
            raise InputError(f"the SNR is measured over one of {', '.join(SNR_OVER)}, got "
                             f"'{snr_over}'")
        self.snr_over = snr_over
        self.t = template
        # several SNRs: particle i gets snrs[i % len(snrs)] (a mixed stack, e.g. to start
        # training on clean particles among noisy ones)
        self.snrs, self.max_shift, self.ctf = snrs, int(max_shift), bool(ctf)
        self.background, self.defocus_um = float(background), defocus_um
        self.rng = np.random.default_rng([seed, 0])
        self.noise_rng = np.random.default_rng([seed, 1])
        inside = template.mask > 0.5
        self.signal_std = float(template.reference[inside].std())

    def _background(self, k: int, n: int) -> np.ndarray:
        white = self.noise_rng.standard_normal((k, n, n))
        smooth = ndimage.gaussian_filter(white, (0, n / 16, n / 16), mode="wrap")
        smooth /= smooth.std(axis=(1, 2), keepdims=True)
        return (smooth * self.background * self.signal_std).astype(np.float32)

    def chunks(self, n: int, chunk: int = 256, keep_clean: bool = False
               ) -> Iterator[ParticleBatch]:
        size = self.t.reference.shape[-1]
        done = 0
        while done < n:
            k = min(chunk, n - done)
            angle = self.rng.uniform(0.0, 360.0, k)
            shift = self.rng.integers(-self.max_shift, self.max_shift + 1, (k, 2)).astype(float)
            defocus = self.rng.uniform(*self.defocus_um, k)
            moved = np.stack([geometry.apply(self.t.reference, (a, x, y))
                              for a, (x, y) in zip(angle, shift, strict=True)])
            if self.snr_over == "particle":
                masks = np.stack([geometry.apply(self.t.mask, (0.0, x, y), order=1)
                                  for x, y in shift]) > 0.5
            else:
                masks = np.ones((k, size, size), bool)
            clean = moved + (self._background(k, size) if self.background > 0 else 0.0)
            if self.ctf:
                clean = apply_ctf(clean, self.t.pixel_size, defocus)
            var = np.array([c[m].var() for c, m in zip(clean, masks, strict=True)])
            snr = self.snrs[(done + np.arange(k)) % self.snrs.size]
            sigma = np.sqrt(var / snr)[:, None, None]
            noisy = clean + sigma * self.noise_rng.standard_normal(clean.shape)
            yield ParticleBatch(noisy.astype(np.float32), angle, shift[:, 0], shift[:, 1],
                                defocus if self.ctf else np.full(k, np.nan),
                                clean.astype(np.float32) if keep_clean else None,
                                masks if keep_clean else None)
            done += k


def measured_snr(clean: np.ndarray, noisy: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per particle: variance of the clean image over that of the noise, inside the mask."""
    return np.array([c[m].var() / (y - c)[m].var()
                     for c, y, m in zip(clean, noisy, masks, strict=True)])


def read_reference(path: str | Path, size: int | None) -> np.ndarray:
    """A 2D reference (MRC or PNG/JPEG/TIFF) of the particles' size (``None``: any size)."""
    path = Path(path)
    image = read_mrc(path) if path.suffix.lower() in (".mrc", ".mrcs", ".map") \
        else read_image(path)
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 2 or image.shape[0] != image.shape[1]:
        raise InputError(f"reference must be one square image, got shape {image.shape}", path)
    if size is not None and image.shape[0] != size:
        raise InputError(f"reference is {image.shape[0]} px but the particles are {size} px",
                         path)
    return image.astype(np.float32)


__all__ = ["Template", "load_template", "isolate", "project", "resample", "ParticleBatch",
           "ParticleSynth", "measured_snr", "read_reference"]
