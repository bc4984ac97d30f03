"""The one home of the rigid-transform convention (see ``docs``: conventions).

Images are ``(..., N, N)`` arrays indexed ``[y, x]`` (row down, column right). The centre of
rotation is pixel ``(N // 2, N // 2)``, the same as ``fftshift`` and RELION.

A transform ``T = (angle, tx, ty)`` (degrees, pixels) applied to ``f`` gives
``g(p) = f(R^-1 (p - c - t) + c)``: rotate about the centre, then shift. In ``(x, y)``
coordinates ``R = [[cos a, sin a], [-sin a, cos a]]``, which turns the image counter-clockwise as
displayed for a positive angle: the point one pixel right of the centre goes one pixel up for 90.
Equivalently the content at centred position ``v`` moves to ``R v + t``.

``estimate(a, b)`` returns the ``T`` with ``apply(a, T) ~ b``.

Interpolation: numpy ``apply`` uses cubic B-splines (``scipy.ndimage.map_coordinates``, order 3);
torch ``warp`` uses ``grid_sample`` (bilinear by default, bicubic on request). Outside the image
both fill with zeros unless told otherwise. Sub-pixel pure shifts can use the Fourier phase
(``fourier_shift``), which is exact for band-limited, periodic images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

ArrayLike = np.ndarray | float | int


# --------------------------------------------------------------------------------------------
# Transforms as parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rigid:
    """A batch (or a single) rigid transform: angle in degrees, shift in pixels."""

    angle: np.ndarray
    tx: np.ndarray
    ty: np.ndarray

    @classmethod
    def of(cls, angle: ArrayLike, tx: ArrayLike = 0.0, ty: ArrayLike = 0.0) -> Rigid:
        angle, tx, ty = np.broadcast_arrays(
            np.asarray(angle, np.float64), np.asarray(tx, np.float64), np.asarray(ty, np.float64)
        )
        return cls(angle.copy(), tx.copy(), ty.copy())

    def __len__(self) -> int:
        return int(np.size(self.angle))

    def __getitem__(self, index) -> Rigid:
        return Rigid(self.angle[index], self.tx[index], self.ty[index])


def wrap360(angle: ArrayLike) -> np.ndarray:
    """Angles mapped into [0, 360)."""
    out = np.mod(np.asarray(angle, np.float64), 360.0)
    return np.where(out >= 360.0, 0.0, out)  # mod can round up to 360 for tiny negatives


def rotation_matrix(angle: ArrayLike) -> np.ndarray:
    """``R(angle)`` in (x, y) coordinates, shape ``(..., 2, 2)``."""
    a = np.deg2rad(np.asarray(angle, np.float64))
    c, s = np.cos(a), np.sin(a)
    return np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], -2)


def rotate_vector(angle: ArrayLike, x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``R(angle) @ (x, y)``."""
    a = np.deg2rad(np.asarray(angle, np.float64))
    c, s = np.cos(a), np.sin(a)
    return c * x + s * y, -s * x + c * y


def compose(first: Rigid, second: Rigid) -> Rigid:
    """The transform equal to applying ``first`` and then ``second``.

    ``v -> R2 (R1 v + t1) + t2 = R2 R1 v + (R2 t1 + t2)``.
    """
    rx, ry = rotate_vector(second.angle, first.tx, first.ty)
    return Rigid.of(wrap360(first.angle + second.angle), rx + second.tx, ry + second.ty)


def invert(t: Rigid) -> Rigid:
    """The transform undoing ``t``: ``v = R^-1 (w - t)``."""
    rx, ry = rotate_vector(-t.angle, t.tx, t.ty)
    return Rigid.of(wrap360(-t.angle), -rx, -ry)


# --------------------------------------------------------------------------------------------
# Angles on the circle
# --------------------------------------------------------------------------------------------


def to_relion(t: Rigid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RELION's ``(rlnAnglePsi, rlnOriginX, rlnOriginY)`` (degrees, pixels) for our ``t`` taking
    the reference onto the particle (``apply(reference, t) ~ particle``).

    Derivation, from RELION's documented conventions (``Reference/Conventions.rst``: the angles
    rotate the reference into the observation; the origin offsets translate the observation to
    its centre, before the rotation) and its code (``Projector::rotate2D``: the rotated
    reference at frequency ``k`` takes the reference's value at ``A^T k``, with
    ``A = [[cos psi, sin psi], [-sin psi, cos psi]]`` in ``(x = column, y = row)``):

    1. The content at ``r`` moves to ``A r`` (a rotation acts alike on a function and its
       Fourier transform), so RELION's rotated reference is ``apply(reference, (psi, 0, 0))``:
       ``A`` is our ``R(psi)``.
    2. Moving the particle's content by ``+origin`` centres it, giving that rotated reference:
       ``rotated(p) = particle(p - origin)``, so the particle is the rotated reference with its
       content moved by ``-origin`` (RELION re-centres a particle at ``coordinate - origin``).
    3. Ours: ``particle = apply(reference, (angle, tx, ty))`` = rotated by ``angle``, then moved
       by ``t``. Matching: ``psi = angle`` and ``origin = -t``.

    ``rlnOriginXAngst`` is ``rlnOriginX`` times the pixel size.
    """
    return wrap360(t.angle), -np.asarray(t.tx, np.float64), -np.asarray(t.ty, np.float64)


def from_relion(psi: ArrayLike, origin_x: ArrayLike, origin_y: ArrayLike) -> Rigid:
    """Our transform (reference onto particle) from RELION's psi and origin in pixels; the
    inverse of :func:`to_relion`."""
    return Rigid.of(wrap360(psi), -np.asarray(origin_x, np.float64),
                    -np.asarray(origin_y, np.float64))


def angle_difference(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Signed circular difference ``a - b`` in [-180, 180)."""
    return np.mod(np.asarray(a, np.float64) - np.asarray(b, np.float64) + 180.0, 360.0) - 180.0


def angle_error(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Circular absolute difference in [0, 180]."""
    return np.abs(angle_difference(a, b))


def circular_mean(angles: ArrayLike, weights: ArrayLike | None = None, axis: int | None = None):
    """Circular mean in [0, 360) (the direction of the mean unit vector)."""
    a = np.deg2rad(np.asarray(angles, np.float64))
    w = np.ones_like(a) if weights is None else np.asarray(weights, np.float64)
    s = np.sum(w * np.sin(a), axis=axis)
    c = np.sum(w * np.cos(a), axis=axis)
    return wrap360(np.rad2deg(np.arctan2(s, c)))


# --------------------------------------------------------------------------------------------
# Coordinates, masks
# --------------------------------------------------------------------------------------------


def centre(n: int) -> int:
    return n // 2


def centred_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates relative to the centre: ``(y, x)`` arrays of shape ``(n, n)``."""
    r = np.arange(n, dtype=np.float64) - centre(n)
    return np.meshgrid(r, r, indexing="ij")


def source_coordinates(
    angle: float, tx: float, ty: float, y: np.ndarray, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Where output points ``(y, x)`` (centred) read from: ``R^-1 (p - t)`` (centred)."""
    sx, sy = rotate_vector(-angle, np.asarray(x) - tx, np.asarray(y) - ty)
    return sy, sx


def soft_circular_mask(n: int, radius: float | None = None, edge: float = 3.0) -> np.ndarray:
    """1 inside ``radius - edge``, a raised-cosine fall to 0 at ``radius`` (pixels from centre).

    ``radius`` defaults to ``n // 2 - 1`` so the disc never touches the border.
    """
    radius = (n // 2 - 1) if radius is None else float(radius)
    yy, xx = centred_grid(n)
    r = np.hypot(yy, xx)
    inner = radius - edge
    if edge <= 0:
        return (r <= radius).astype(np.float32)
    t = np.clip((r - inner) / edge, 0.0, 1.0)
    return (0.5 * (1.0 + np.cos(np.pi * t))).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Applying transforms: numpy (single images)
# --------------------------------------------------------------------------------------------


def apply(image: np.ndarray, t: Rigid | tuple, order: int = 3, fill: float = 0.0) -> np.ndarray:
    """``apply(f, T)`` for one image (cubic spline by default; ``fill`` outside)."""
    t = t if isinstance(t, Rigid) else Rigid.of(*t)
    n = image.shape[-1]
    if image.shape[-2] != n:
        raise ValueError(f"image is not square: {image.shape}")
    yy, xx = centred_grid(n)
    sy, sx = source_coordinates(float(t.angle), float(t.tx), float(t.ty), yy, xx)
    c = centre(n)
    out = ndimage.map_coordinates(
        np.asarray(image, np.float64), [sy + c, sx + c], order=order, mode="constant", cval=fill
    )
    return out.astype(np.float32)


def align(image: np.ndarray, t: Rigid | tuple, order: int = 3) -> np.ndarray:
    """Bring ``b`` back onto ``a`` given ``T = estimate(a, b)``: ``apply(b, inverse(T))``."""
    t = t if isinstance(t, Rigid) else Rigid.of(*t)
    return apply(image, invert(t), order=order)


# --------------------------------------------------------------------------------------------
# Applying transforms: torch (batches)
# --------------------------------------------------------------------------------------------


def _as_tensor(value, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value, np.float64), dtype=like.dtype, device=like.device)


def warp_grid(
    n: int,
    angle: torch.Tensor,
    tx: torch.Tensor,
    ty: torch.Tensor,
) -> torch.Tensor:
    """``grid_sample`` grid (``align_corners=True``) of shape ``(B, n, n, 2)`` for ``apply``."""
    dtype, device = angle.dtype, angle.device
    scale = 2.0 / (n - 1)
    r = (torch.arange(n, dtype=dtype, device=device) - centre(n)) * scale
    a = torch.deg2rad(angle)
    c, s = torch.cos(a)[:, None], torch.sin(a)[:, None]
    # R^-1 = R^T = [[c, -s], [s, c]]: with p = (x - tx, y - ty) about the centre,
    # sx = c px - s py + centre and sy = s px + c py + centre. Each is a term in x plus a term
    # in y, so two broadcast adds fill the grid (15x faster than whole-grid arithmetic)
    kx = (centre(n) - c * tx[:, None] + s * ty[:, None]) * scale - 1.0
    ky = (centre(n) - s * tx[:, None] - c * ty[:, None]) * scale - 1.0
    gx = ((c * r)[:, None, :], (kx - s * r)[:, :, None])
    gy = ((s * r)[:, None, :], (ky + c * r)[:, :, None])
    if torch.is_grad_enabled() and kx.requires_grad | ky.requires_grad:
        # autograd (the STN baseline learns the transform) takes no ``out=``
        return torch.stack([gx[0] + gx[1], gy[0] + gy[1]], dim=-1)
    grid = torch.empty(angle.shape[0], n, n, 2, dtype=dtype, device=device)
    torch.add(*gx, out=grid[..., 0])
    torch.add(*gy, out=grid[..., 1])
    return grid


def warp(
    images: torch.Tensor,
    angle,
    tx=0.0,
    ty=0.0,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """``apply`` for a batch ``(B, N, N)`` (or ``(B, C, N, N)``) with per-image parameters.

    ``angle``, ``tx``, ``ty`` are scalars, arrays or tensors broadcast to ``(B,)``.
    """
    squeeze = images.dim() == 3
    x = images[:, None] if squeeze else images
    b, n = x.shape[0], x.shape[-1]
    if x.shape[-2] != n:
        raise ValueError(f"images are not square: {tuple(x.shape)}")
    params = [p if torch.is_tensor(p) else _as_tensor(p, x) for p in (angle, tx, ty)]
    params = [p.to(x.dtype).to(x.device).reshape(-1).expand(b) for p in params]
    grid = warp_grid(n, *params)
    out = torch.nn.functional.grid_sample(
        x, grid, mode=mode, padding_mode=padding_mode, align_corners=True
    )
    return out[:, 0] if squeeze else out


def rotate_all(
    images: torch.Tensor, angles: torch.Tensor, mode: str = "bilinear"
) -> torch.Tensor:
    """Every image ``(B, N, N)`` rotated by every angle ``(K,)`` about the centre:
    ``(B, K, N, N)``. One sampling grid per angle serves the whole batch (the images ride as
    channels), which is much cheaper than a grid per (image, angle)."""
    b, n = images.shape[0], images.shape[-1]
    zero = torch.zeros_like(angles)
    grid = warp_grid(n, angles, zero, zero)
    src = images[None].expand(angles.shape[0], b, n, n)
    out = torch.nn.functional.grid_sample(
        src, grid, mode=mode, padding_mode="zeros", align_corners=True
    )
    return out.transpose(0, 1)


def rotate_each(
    images: torch.Tensor, angles: torch.Tensor, mode: str = "bilinear"
) -> torch.Tensor:
    """Every image ``(B, N, N)`` rotated by its own angles ``(B, K)`` about the centre:
    ``(B, K, N, N)``, as ``warp`` of each image repeated ``K`` times gives it. The ``K``
    sampling grids of an image are stacked down one tall grid, so the image is read once and
    never copied (half the time of the repeated ``warp`` at 128 px)."""
    b, n = images.shape[0], images.shape[-1]
    k = angles.shape[1]
    flat = angles.reshape(-1).to(images.dtype)
    zero = torch.zeros_like(flat)
    grid = warp_grid(n, flat, zero, zero).reshape(b, k * n, n, 2)
    out = torch.nn.functional.grid_sample(
        images[:, None], grid, mode=mode, padding_mode="zeros", align_corners=True
    )
    return out.reshape(b, k, n, n)


# --------------------------------------------------------------------------------------------
# Fourier-domain helpers
# --------------------------------------------------------------------------------------------


def fourier_shift(images: torch.Tensor | np.ndarray, tx, ty):
    """Shift by ``(tx, ty)`` pixels (sub-pixel allowed) with a Fourier phase ramp (periodic).

    Works on numpy arrays or torch tensors ``(..., N, N)``; per-image shifts broadcast over the
    leading axes.
    """
    is_numpy = isinstance(images, np.ndarray)
    x = torch.as_tensor(images, dtype=torch.float64) if is_numpy else images
    n = x.shape[-1]
    real_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    f = torch.fft.fftfreq(n, dtype=real_dtype, device=x.device)
    tx = torch.as_tensor(tx, dtype=real_dtype, device=x.device)[..., None, None]
    ty = torch.as_tensor(ty, dtype=real_dtype, device=x.device)[..., None, None]
    # content at p moves to p + t: multiply the spectrum by exp(-2 pi i k.t)
    phase = -2.0 * math.pi * (f[None, :] * tx + f[:, None] * ty)
    spectrum = torch.fft.fft2(x.to(real_dtype)) * torch.polar(torch.ones_like(phase), phase)
    # for even N the Nyquist bin leaves a small imaginary residue on fractional shifts: drop it
    out = torch.fft.ifft2(spectrum).real
    if is_numpy:
        return out.numpy().astype(np.asarray(images).dtype)
    return out.to(x.dtype)
