"""SSIM (Wang, Bovik, Sheikh & Simoncelli 2004) on greyscale, with an area left out.

Standard constants: an 11x11 Gaussian window with sigma 1.5, K1 = 0.01,
K2 = 0.03, L = 255. The mean is taken over the pixels whose whole window lies
inside the image and outside the excluded box (the badge, grown by the window
radius, so the plate's edge does not count either).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

SIGMA = 1.5
TRUNCATE = 3.5  # radius = int(3.5 * 1.5 + 0.5) = 5: an 11x11 window
RADIUS = int(TRUNCATE * SIGMA + 0.5)
C1 = (0.01 * 255) ** 2
C2 = (0.03 * 255) ** 2


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {a.shape} vs {b.shape}")
    a = a.astype(np.float64, copy=False)
    b = b.astype(np.float64, copy=False)

    def blur(x: np.ndarray) -> np.ndarray:
        return gaussian_filter(x, SIGMA, truncate=TRUNCATE, mode="reflect")

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + C1) * (2 * cov + C2)) / ((mu_a ** 2 + mu_b ** 2 + C1) * (var_a + var_b + C2))


def mean_ssim(a: np.ndarray, b: np.ndarray, exclude: tuple[int, int, int, int] | None = None) -> float:
    """Mean SSIM of two equally sized 2-D arrays, leaving out ``exclude`` = (left, top, right, bottom)."""
    values = ssim_map(a, b)
    keep = np.zeros(values.shape, dtype=bool)
    height, width = values.shape
    if height > 2 * RADIUS and width > 2 * RADIUS:
        keep[RADIUS:height - RADIUS, RADIUS:width - RADIUS] = True
    else:  # tiny images: every pixel counts
        keep[:, :] = True
    if exclude is not None:
        left, top, right, bottom = exclude
        keep[max(0, top - RADIUS):max(0, bottom + RADIUS), max(0, left - RADIUS):max(0, right + RADIUS)] = False
    if not keep.any():
        raise ValueError("nothing left to compare outside the excluded area")
    return float(values[keep].mean())
