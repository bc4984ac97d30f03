"""The contrast transfer function (CTF) of a transmission electron microscope, for synthetic
particles.

``CTF(k) = -(sqrt(1 - w^2) sin(chi(k)) + w cos(chi(k)))`` with the phase aberration
``chi(k) = pi * lambda * dz * k^2 - (pi / 2) * Cs * lambda^3 * k^4``: ``k`` the spatial
frequency (1/A), ``dz`` the defocus (A, positive = underfocus, as RELION's ``rlnDefocusU``),
``Cs`` the spherical aberration (A), ``w`` the amplitude contrast and ``lambda`` the
relativistic electron wavelength. Astigmatism is not modelled: one defocus per image.
"""

from __future__ import annotations

import numpy as np


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in A: ``h / sqrt(2 m e V (1 + e V / (2 m c^2)))``."""
    volts = voltage_kv * 1e3
    return 12.2643247 / np.sqrt(volts * (1.0 + 0.978466e-6 * volts))


def ctf(
    n: int,
    pixel_size: float,
    defocus_um: np.ndarray | float,
    voltage_kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.1,
) -> np.ndarray:
    """CTF on the ``rfft2`` grid of ``n x n`` images: ``(..., n, n // 2 + 1)``, one per defocus."""
    fy = np.fft.fftfreq(n, d=pixel_size)[:, None]
    fx = np.fft.rfftfreq(n, d=pixel_size)[None, :]
    k2 = fx**2 + fy**2
    lam = electron_wavelength(voltage_kv)
    dz = np.asarray(defocus_um, np.float64)[..., None, None] * 1e4
    cs = cs_mm * 1e7
    chi = np.pi * lam * dz * k2 - 0.5 * np.pi * cs * lam**3 * k2**2
    w = amplitude_contrast
    return -(np.sqrt(1.0 - w * w) * np.sin(chi) + w * np.cos(chi))


def apply_ctf(
    images: np.ndarray,
    pixel_size: float,
    defocus_um: np.ndarray,
    absolute: bool = True,
    **optics,
) -> np.ndarray:
    """Filter each image of ``(B, n, n)`` by the CTF of its own defocus. ``absolute``: by
    ``|CTF|``, as for phase-flipped data (the paper's synthetic particles)."""
    n = images.shape[-1]
    h = ctf(n, pixel_size, defocus_um, **optics)
    h = np.abs(h) if absolute else h
    out = np.fft.irfft2(np.fft.rfft2(images) * h, s=(n, n))
    return out.astype(np.float32)


__all__ = ["electron_wavelength", "ctf", "apply_ctf"]
