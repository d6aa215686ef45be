"""Drawing on an axial slice in world millimetres: the canvas and shape helpers.

World coordinates: x to the patient's left, y posterior, both in mm.
"""

from __future__ import annotations

import math

import numpy as np


class Canvas:
    """An n x n slice (HU and label arrays) centred at (cx, cy) mm with square pixels of ``spacing`` mm."""

    def __init__(self, n: int, spacing: float, cx: float, cy: float):
        """An ``n`` x ``n`` canvas of air (-1000 HU, label 0) centred at (``cx``, ``cy``) mm with ``spacing`` mm
        pixels."""
        self.n, self.s = n, spacing
        c = (np.arange(n) - n / 2 + 0.5) * spacing
        self.x = (c + cx)[None, :].astype(np.float32)
        self.y = (c + cy)[:, None].astype(np.float32)
        self.hu = np.full((n, n), -1000.0, dtype=np.float32)
        self.lab = np.zeros((n, n), dtype=np.uint8)

    def bbox(self, x0, x1, y0, y1):
        """(row slice, column slice) of the canvas covering x ``x0``-``x1`` and y ``y0``-``y1`` mm (clipped to
        the canvas)."""
        s, n = self.s, self.n
        c0 = int(np.clip(np.floor((x0 - self.x[0, 0]) / s), 0, n))
        c1 = int(np.clip(np.ceil((x1 - self.x[0, 0]) / s) + 1, 0, n))
        r0 = int(np.clip(np.floor((y0 - self.y[0, 0]) / s), 0, n))
        r1 = int(np.clip(np.ceil((y1 - self.y[0, 0]) / s) + 1, 0, n))
        return slice(r0, r1), slice(c0, c1)

    def ellipse(self, cx, cy, a, b, rot=0.0, wobble=None):
        """(region slices, boolean mask) of a rotated, optionally wobbly ellipse."""
        r = max(a, b) * (1.25 if wobble is not None else 1.0) + self.s
        rs, cs = self.bbox(cx - r, cx + r, cy - r, cy + r)
        dx, dy = self.x[:, cs] - cx, self.y[rs, :] - cy
        cr, sr = math.cos(rot), math.sin(rot)
        u = dx * cr + dy * sr
        v = -dx * sr + dy * cr
        rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        if wobble is not None:
            t = np.arctan2(v / b, u / a)
            lim = 1.0 + sum(amp * np.cos(k * t + ph) for k, amp, ph in wobble)
            return (rs, cs), rho <= lim
        return (rs, cs), rho <= 1.0

    def paint(self, region, mask, label, hu, only=None):
        """Set ``label`` and ``hu`` (a value or an array) on the ``mask`` pixels of ``region``; with ``only``, only over
        pixels currently labelled one of ``only``."""
        rs, cs = region
        if only is not None:
            mask = mask & np.isin(self.lab[rs, cs], only)
        self.lab[rs, cs][mask] = label
        if np.ndim(hu):
            self.hu[rs, cs][mask] = hu[rs, cs][mask] if hu.shape == self.hu.shape else hu[mask]
        else:
            self.hu[rs, cs][mask] = hu


def wobble(rng, kmax=4, amp=0.06):
    """Random harmonics (k, amplitude, phase) that make an ellipse outline irregular."""
    return [(k, rng.uniform(0, amp) / k**0.5, rng.uniform(0, 2 * math.pi)) for k in range(2, kmax + 1)]


def radial(theta, a, b_ant, b_post, p_ant, p_post):
    """Superellipse radius with different anterior/posterior depth and squareness."""
    c, s = np.abs(np.cos(theta)), np.sin(theta)
    b = np.where(s > 0, b_post, b_ant)
    p = np.where(s > 0, p_post, p_ant)
    return (np.power(c / a, p) + np.power(np.abs(s) / b, p)) ** (-1.0 / p)


def fourier(theta, rng, amp, kmax=5):
    """1 + a random smooth radial modulation of an outline, sampled at angles ``theta``."""
    out = np.ones_like(theta)
    for k in range(1, kmax + 1):
        out += rng.uniform(-amp, amp) / k**0.7 * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    return out


