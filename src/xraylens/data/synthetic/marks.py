"""How findings and look-alikes mark the film: bands, two-fragment fractures, lesions and metal.

Each function works on one bone's :class:`~xraylens.data.synthetic.raster.Crop`
(path lengths in mm) or on a full-size metal canvas, and returns the pixels it
touched, from which the ground-truth boxes are taken: a box is what was drawn,
never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from xraylens.data.synthetic.findings import Band, Fracture, Hardware, Lesion
from xraylens.data.synthetic.raster import Crop, Flat, chords, grid


@dataclass(frozen=True)
class Site:
    """Where a finding sits in one view: point, axis direction and half-width (px) on the bone."""

    c: np.ndarray
    a: np.ndarray  # unit, towards t = 1
    r: float
    view: float  # beam angle in the bone's cross-section
    unit: float  # px per "px at 512"
    cortex: float


def site_of(flat: Flat, t: float, unit: float) -> Site:
    c, a, r = flat.at(t)
    return Site(c, a, r, flat.view, unit, float(np.interp(t, flat.knots, flat.cortex)))


def _rot(v: np.ndarray, ang: float) -> np.ndarray:
    c, s = np.cos(ang), np.sin(ang)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _line(site: Site, angle: float, X, Y, wave: float, wl: float, ph: float):
    """Signed distance to a jagged line across the bone (positive towards t = 1) and position along it."""
    n = _rot(site.a, angle)
    dx, dy = X - site.c[0], Y - site.c[1]
    s = dx * n[0] + dy * n[1]
    u = -dx * n[1] + dy * n[0]
    k = 2 * np.pi / max(wl * site.r, 1.0)
    s = s - wave * site.unit * (np.sin(k * u + ph) + 0.5 * np.sin(2.3 * k * u + 2 * ph))
    return s.astype(np.float32), u.astype(np.float32)


def _coverage(s: np.ndarray, w: float) -> np.ndarray:
    """Fraction of each pixel covered by a line of width ``w`` px (sub-pixel lines get partial cover)."""
    return np.clip(0.5 * (w + 1.0) - np.abs(s), 0.0, min(w, 1.0))


def draw_band(crop: Crop, site: Site, b: Band, angle: float) -> np.ndarray:
    """Thin the bone along the band; returns the pixels it touched (bool, crop-sized)."""
    h, w_ = crop.outer.shape
    reach = (
        site.r * (1.6 + 1.7 * abs(np.tan(np.clip(angle, -1.2, 1.2)))) + (b.wave + b.width) * site.unit * 3 + 3
    )
    cx, cy = site.c[0] - crop.x0, site.c[1] - crop.y0
    a0, a1 = max(int(cx - reach), 0), min(int(cx + reach) + 1, w_)
    b0, b1 = max(int(cy - reach), 0), min(int(cy + reach) + 1, h)
    touched = np.zeros((h, w_), bool)
    if a1 <= a0 or b1 <= b0:
        return touched
    sub = Crop(
        crop.x0 + a0, crop.y0 + b0, crop.outer[b0:b1, a0:a1], crop.med[b0:b1, a0:a1]
    )  # views: edits land in crop
    touched[b0:b1, a0:a1] = _band(sub, site, b, angle)
    return touched


def _band(crop: Crop, site: Site, b: Band, angle: float) -> np.ndarray:
    X, Y = grid(crop.x0, crop.y0, crop.x0 + crop.outer.shape[1], crop.y0 + crop.outer.shape[0])
    s, u = _line(site, angle, X, Y, b.wave, b.wavelength, b.phase)
    v0, v1 = b.v0, b.v1
    if np.cos(b.side - site.view) < 0:
        v0, v1 = -v1, -v0
    lat = np.clip((u - v0 * site.r) / 2 + 0.5, 0, 1) * np.clip((v1 * site.r - u) / 2 + 0.5, 0, 1)
    w = b.width * site.unit
    cov = _coverage(s, w) * lat
    keep = 1.0 - b.depth * cov
    if b.sclerosis:
        ws = max(w, 1.0)
        keep = keep + b.sclerosis * lat * np.exp(-(((s + w / 2 + ws) / ws) ** 2))
    crop.outer *= keep
    crop.med *= keep
    return (cov > 0.05) & (crop.outer > 0.05)


def draw_fracture(
    flats: list[Flat], win, site: Site, f: Fracture, angle: float
) -> tuple[Crop, np.ndarray, float]:
    """Two fragments of the same bone, the distal one moved; returns crop, line pixels, step (px)."""
    x0, y0, x1, y1 = win
    X, Y = grid(x0, y0, x1, y1)
    n = _rot(site.a, angle)
    perp = np.array([-site.a[1], site.a[0]])
    cv, sv = np.cos(site.view), np.sin(site.view)
    shift = perp * (f.dx * cv + f.dz * sv) * site.r + site.a * f.axial * site.r
    tilt = f.ax * cv + f.az * sv
    if n @ site.a < 0:
        n = -n
    s1, _ = _line(site, angle, X, Y, f.wave, f.wavelength, f.phase)
    w = f.width * site.unit
    # distal fragment: where in the unbroken bone does pixel p come from?
    c, s_ = np.cos(-tilt), np.sin(-tilt)
    qx, qy = X - site.c[0] - shift[0], Y - site.c[1] - shift[1]
    Xd = (site.c[0] + c * qx - s_ * qy).astype(np.float32)
    Yd = (site.c[1] + s_ * qx + c * qy).astype(np.float32)
    s2, _ = _line(site, angle, Xd, Yd, f.wave, f.wavelength, f.phase)
    wp = f.depth * np.clip(-s1 - w / 2 + 0.5, 0, 1) + (1 - f.depth) * (s1 < 0)
    wd = f.depth * np.clip(s2 - w / 2 + 0.5, 0, 1) + (1 - f.depth) * (s2 >= 0)
    outer = np.zeros((y1 - y0, x1 - x0), np.float32)
    med = np.zeros_like(outer)
    for fl in flats:
        o1, m1 = chords(fl, X, Y)
        o2, m2 = chords(fl, Xd, Yd)
        np.maximum(outer, o1 * wp + o2 * wd, out=outer)
        np.maximum(med, m1 * wp + m2 * wd, out=med)
    near = (np.abs(s1) <= w / 2 + 1.0) | (np.abs(s2) <= w / 2 + 1.0)
    return Crop(x0, y0, outer, med), near & (outer > 0.05), float(np.hypot(*shift) + abs(tilt) * site.r)


def draw_lesion(crop: Crop, site: Site, les: Lesion) -> np.ndarray:
    X, Y = grid(crop.x0, crop.y0, crop.x0 + crop.outer.shape[1], crop.y0 + crop.outer.shape[0])
    perp = np.array([-site.a[1], site.a[0]])
    inner_r = site.r * (1 - site.cortex)
    off = (les.ox * np.cos(site.view) + les.oz * np.sin(site.view)) * inner_r
    cx, cy = site.c + perp * off
    dx, dy = X - cx, Y - cy
    a_ = max(les.along * site.r, 1.0)
    b_ = max(les.across * site.r, 1.0)
    q = np.sqrt(((dx * site.a[0] + dy * site.a[1]) / a_) ** 2 + ((dx * perp[0] + dy * perp[1]) / b_) ** 2)
    inside = np.sqrt(np.clip(1 - q * q, 0, 1))
    if les.moth:
        inside = inside * np.clip(
            0.55 + 0.45 * np.cos(X * 1.7 / site.unit + 0.4) * np.sin(Y * 1.3 / site.unit), 0, 1
        )
    cortex = crop.outer - crop.med
    med = crop.med * (1 - les.depth * inside)
    if les.rim:
        med = med * (1 + les.rim * np.exp(-(((q - 1) / 0.12) ** 2)))
    cortex = cortex * (1 - les.thin * inside)
    crop.med[:] = med
    crop.outer[:] = cortex + med
    return (q < 1.15) & (crop.outer > 0.05)


# ---------------------------------------------------------------- metal


def draw_hardware(
    shape: tuple[int, int], flat: Flat, hw: Hardware, unit: float, view_jitter: float
) -> np.ndarray:
    """Metal thickness (mm-equivalent) of one implant on a full-size canvas."""
    canvas = np.zeros(shape, np.uint8)
    site = site_of(flat, hw.t, unit)
    face = np.cos(hw.side - site.view)  # 1 = plate seen edge-on from its side, 0 = face-on
    if hw.kind_of == "plate":
        ts = np.linspace(hw.t - hw.span, hw.t + hw.span, 9)
        thick = max(0.12 * site.r, 1.2 * unit) * hw.scale
        half = max(
            0.5 * (0.75 * site.r * hw.scale * abs(np.sin(hw.side - site.view)) + thick * abs(face)),
            0.8 * unit,
        )
        off = (site.r + thick / 2) * face
        centres, dirs = [], []
        for t in ts:
            c, a, r = flat.at(float(t))
            p = np.array([-a[1], a[0]])
            centres.append(c + p * (r + thick / 2) * face)
            dirs.append(p)
        left = [c + p * half for c, p in zip(centres, dirs, strict=True)]
        right = [c - p * half for c, p in zip(centres, dirs, strict=True)]
        _fill(canvas, np.array(left + right[::-1]))
        for t in np.linspace(hw.t - hw.span * 0.85, hw.t + hw.span * 0.85, hw.count):
            c, a, r = flat.at(float(t))
            p = np.array([-a[1], a[0]])
            head = c + p * off
            dia = max(0.32 * r, 1.5 * unit) * hw.scale
            length = (2 * r + thick) * abs(face)
            if length > dia * 1.5:
                _screw(canvas, head, head - np.sign(face) * p * length, dia, unit)
            cv2.circle(canvas, _pt(head), int(round(dia * 0.75 * 16)), 255, -1, cv2.LINE_AA, 4)
        return canvas.astype(np.float32) * (3.0 / 255)
    for k in range(hw.count):
        c, a, r = flat.at(float(hw.t + (k - (hw.count - 1) / 2) * hw.span))
        p = np.array([-a[1], a[0]])
        ang = hw.angle + view_jitter + 0.15 * k
        lateral = abs(np.cos(hw.side - site.view))
        if hw.kind_of == "screws":
            d = p * np.cos(ang) * max(lateral, 0.15) + a * np.sin(ang)
            half = r * 1.15
            dia = max(0.3 * r, 1.3 * unit) * hw.scale
            _screw(canvas, c - d * half, c + d * half, dia, unit, head=True)
        else:
            d = p * np.sin(ang) * max(lateral, 0.2) + a * np.cos(ang)
            half = r * hw.length / 2
            dia = max(0.14 * r, 1.0 * unit) * hw.scale
            end, tip = c - d * half, c + d * half
            bend = end - _rot(d, 0.9) * r * 1.5
            cv2.polylines(
                canvas,
                [np.round(np.array([tip, end, bend]) * 16).astype(np.int32)],
                False,
                255,
                max(1, int(round(dia))),
                cv2.LINE_AA,
                4,
            )
    return canvas.astype(np.float32) * (3.0 / 255)


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(p[0] * 16)), int(round(p[1] * 16))


def _fill(canvas: np.ndarray, poly: np.ndarray) -> None:
    cv2.fillPoly(canvas, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)


def _screw(
    canvas: np.ndarray, a: np.ndarray, b: np.ndarray, dia: float, unit: float, head: bool = False
) -> None:
    """A threaded shaft from ``a`` to ``b``: saw-tooth edges, pitch ~ 0.45 diameter, and a wider head at ``a``."""
    d = b - a
    length = float(np.hypot(*d))
    if length < 1:
        return
    d = d / length
    n = np.array([-d[1], d[0]])
    pitch = max(0.45 * dia, 1.2 * unit)
    steps = max(int(length / pitch), 1)
    pos = np.linspace(0, length, steps * 2 + 1)
    radius = np.where(np.arange(len(pos)) % 2 == 0, dia * 0.5, dia * 0.32)
    radius[-1] = dia * 0.2  # tapered tip
    left = a + np.outer(pos, d) + np.outer(radius, n)
    right = a + np.outer(np.minimum(pos + pitch / 2, length), d)[::-1] - np.outer(radius[::-1], n)
    right[0] = b - n * dia * 0.2
    _fill(canvas, np.concatenate([left, right]))
    if head:
        hd = np.array([a + n * dia, a - n * dia, a - n * dia - d * dia * 0.8, a + n * dia - d * dia * 0.8])
        _fill(canvas, hd)
