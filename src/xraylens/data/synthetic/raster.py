"""From 3-D pieces to 2-D path lengths: the camera and the per-bone rasteriser.

An X-ray pixel records how much matter the beam crossed on its way. For an
elliptical cylinder of projected half-width ``R`` the chord at distance ``d``
from the axis is ``K * sqrt(1 - (d/R)^2)``; the cortex is the outer chord
minus the chord of the inner (medullary) ellipse. That one formula gives the
look that matters: bright cortical edges (long tangential paths), a greyer
medulla, and brighter bands where bones overlap, because path lengths add.

Coordinates: pixel ``(x, y)`` with ``x`` to the right and ``y`` down.
Chord values are millimetres, so the mapping to intensity does not depend on
the image size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xraylens.data.synthetic.anatomy import LUT, Bone, Piece


@dataclass(frozen=True)
class Camera:
    theta: float  # beam rotation about the limb's long (y) axis, rad: 0 = AP/PA, pi/2 = lateral
    tilt: float  # beam tilt about x, rad (foreshortens the long axis)
    mirror: bool  # left limbs are mirror images of right ones
    psi: float = 0.0  # in-plane rotation, rad
    scale: float = 1.0  # px per mm
    shift: tuple[float, float] = (0.0, 0.0)  # px

    def project(self, pts: np.ndarray) -> np.ndarray:
        """(N, 3) mm -> (N, 2) px."""
        c, s = np.cos(self.theta), np.sin(self.theta)
        x = pts[:, 0] * c + pts[:, 2] * s
        z = -pts[:, 0] * s + pts[:, 2] * c
        y = pts[:, 1] * np.cos(self.tilt) - z * np.sin(self.tilt)
        if self.mirror:
            x = -x
        cp, sp = np.cos(self.psi), np.sin(self.psi)
        u = (x * cp - y * sp) * self.scale + self.shift[0]
        v = (x * sp + y * cp) * self.scale + self.shift[1]
        return np.stack([u, v], 1)


@dataclass(frozen=True)
class Flat:
    """A piece seen by one camera: axis in px and its cross-section profile."""

    pts: np.ndarray  # (K, 2) px
    cum: np.ndarray  # (K,) normalised arc length
    knots: np.ndarray  # (M,)
    radius: np.ndarray  # (M,) projected half-width, px
    chord: np.ndarray  # (M,) longest chord, mm
    cortex: np.ndarray  # (M,) cortical fraction
    view: float  # angle of the beam in the piece's cross-section, rad
    bbox: tuple[float, float, float, float]  # px, radius included
    lut: np.ndarray  # (3, LUT) radius (px), longest chord (mm), medullary fraction at even arc lengths
    straight: bool
    cap: float

    def at(self, t: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Point (px), unit axis direction (towards t=1) and half-width (px) at arc length ``t``."""
        t = float(np.clip(t, 0.0, 1.0))
        i = int(np.clip(np.searchsorted(self.cum, t, side="right") - 1, 0, len(self.cum) - 2))
        span = max(self.cum[i + 1] - self.cum[i], 1e-9)
        a, b = self.pts[i], self.pts[i + 1]
        p = a + (b - a) * (t - self.cum[i]) / span
        d = b - a
        d = d / max(float(np.hypot(*d)), 1e-9)
        return p, d, float(np.interp(t, self.knots, self.radius))


def flatten(piece: Piece, cam: Camera) -> Flat:
    return flatten_many([piece], cam)[0]


def flatten_many(pieces: list[Piece], cam: Camera) -> list[Flat]:
    """Project many pieces with one camera call (the per-piece numpy overhead dominates otherwise)."""
    counts = np.array([len(p.pts) for p in pieces])
    sizes = np.array([len(p.knots) for p in pieces])
    flat_pts = cam.project(np.concatenate([p.pts for p in pieces]))
    view = np.repeat([cam.theta + p.roll for p in pieces], sizes)
    rx = np.concatenate([p.rx for p in pieces])
    rz = np.concatenate([p.rz for p in pieces])
    r_mm = np.sqrt((rx * np.cos(view)) ** 2 + (rz * np.sin(view)) ** 2)
    radius, chord = r_mm * cam.scale, 2 * rx * rz / r_mm
    starts, kstarts = (
        np.concatenate([[0], np.cumsum(counts)[:-1]]),
        np.concatenate([[0], np.cumsum(sizes)[:-1]]),
    )
    rmax = np.maximum.reduceat(radius, kstarts) + 1.0
    lo_x = np.minimum.reduceat(flat_pts[:, 0], starts) - rmax
    lo_y = np.minimum.reduceat(flat_pts[:, 1], starts) - rmax
    hi_x = np.maximum.reduceat(flat_pts[:, 0], starts) + rmax
    hi_y = np.maximum.reduceat(flat_pts[:, 1], starts) + rmax
    boxes = np.stack([lo_x, lo_y, hi_x, hi_y], 1).tolist()
    tables = np.stack([p.table for p in pieces])  # (P, 3, LUT) rx, rz, cortex
    pv = np.array([cam.theta + p.roll for p in pieces], np.float32)[:, None]
    lrx, lrz = tables[:, 0], tables[:, 1]
    lr = np.sqrt((lrx * np.cos(pv)) ** 2 + (lrz * np.sin(pv)) ** 2)
    luts = np.stack([lr * np.float32(cam.scale), 2 * lrx * lrz / lr, 1.0 - tables[:, 2]], 1)
    out = []
    for n, p in enumerate(pieces):
        i, j = starts[n], kstarts[n]
        out.append(
            Flat(
                flat_pts[i : i + counts[n]],
                p.cum,
                p.knots,
                radius[j : j + sizes[n]],
                chord[j : j + sizes[n]],
                p.cortex,
                cam.theta + p.roll,
                tuple(boxes[n]),
                luts[n],
                p.straight,
                p.cap,
            )
        )
    return out


def grid(x0: int, y0: int, x1: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of a crop as broadcastable (1, w) and (h, 1) arrays."""
    return np.arange(x0, x1, dtype=np.float32)[None, :], np.arange(y0, y1, dtype=np.float32)[:, None]


def chords(flat: Flat, X: np.ndarray, Y: np.ndarray, medulla: bool = True):
    """Outer and medullary chord (mm) of one piece at pixel coordinates ``X``, ``Y`` (broadcastable).

    A straight piece (most bones) is one capsule with a varying profile and costs
    one pass; a bent one is the union (max) of its segments' capsules.
    """
    if flat.straight:
        return _capsule(flat, 0, len(flat.pts) - 1, X, Y, medulla)
    outer = med = None
    for i in range(len(flat.pts) - 1):
        o, m = _capsule(flat, i, i + 1, X, Y, medulla)
        outer = o if outer is None else np.maximum(outer, o)
        if medulla:
            med = m if med is None else np.maximum(med, m)
    return outer, med


def _capsule(flat: Flat, i: int, j: int, X: np.ndarray, Y: np.ndarray, medulla: bool):
    """Chords around the straight run from vertex ``i`` to ``j`` (hot loop: few operations per pixel)."""
    (ax, ay), (bx, by) = flat.pts[i].tolist(), flat.pts[j].tolist()
    dx, dy = bx - ax, by - ay
    length = max((dx * dx + dy * dy) ** 0.5, 1e-3)
    ux, uy = np.float32(dx / length), np.float32(dy / length)
    rx, ry = X - np.float32(ax), Y - np.float32(ay)
    along = rx * ux + ry * uy
    across = ry * ux - rx * uy
    clamped = np.minimum(np.maximum(along, np.float32(0)), np.float32(length))
    over = along - clamped
    over = over * np.where(
        over < 0,
        np.float32(1.0 / flat.cap if i == 0 else 1.0),
        np.float32(1.0 / flat.cap if j == len(flat.pts) - 1 else 1.0),
    )
    d2 = across * across + over * over
    lut = flat.lut  # (3, LUT): radius, chord, inner fraction along the piece
    c0, c1 = float(flat.cum[i]), float(flat.cum[j])
    idx = (clamped * np.float32((c1 - c0) * (LUT - 1) / length) + np.float32(c0 * (LUT - 1) + 0.5)).astype(
        np.intp
    )
    r, k = lut[0][idx], lut[1][idx]
    q = d2 / (r * r)
    outer = k * np.sqrt(np.maximum(1.0 - q, 0.0))
    if not medulla:
        return outer, None
    inner = lut[2][idx]
    med = (k * inner) * np.sqrt(np.maximum(1.0 - q / (inner * inner), 0.0))
    return outer, med


@dataclass
class Crop:
    """One bone's (or tissue's) path lengths on its own pixel window."""

    x0: int
    y0: int
    outer: np.ndarray  # (h, w) mm
    med: np.ndarray  # (h, w) mm

    @property
    def slices(self) -> tuple[slice, slice]:
        h, w = self.outer.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)


def window_of(
    flats: list[Flat], shape: tuple[int, int], pad: float = 0.0
) -> tuple[int, int, int, int] | None:
    """Integer pixel window covering ``flats`` (plus ``pad``) clipped to the image; ``None`` when off-image."""
    x0 = int(np.floor(min(f.bbox[0] for f in flats) - pad))
    y0 = int(np.floor(min(f.bbox[1] for f in flats) - pad))
    x1 = int(np.ceil(max(f.bbox[2] for f in flats) + pad))
    y1 = int(np.ceil(max(f.bbox[3] for f in flats) + pad))
    h, w = shape
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    return (x0, y0, x1, y1) if x1 - x0 > 0 and y1 - y0 > 0 else None


def rasterise(
    flats: list[Flat], win: tuple[int, int, int, int], X=None, Y=None, medulla: bool = True
) -> Crop:
    """Union of pieces (max of chords) on window ``win``; ``X``/``Y`` override the pixel coordinates
    (a fracture fragment is the same bone seen through moved coordinates)."""
    if X is None:
        return rasterise_many([(flats, win)], medulla)[0]
    x0, y0, x1, y1 = win
    outer = np.zeros((y1 - y0, x1 - x0), np.float32)
    med = np.zeros_like(outer) if medulla else None
    for f in flats:
        o, m = chords(f, X, Y, medulla)
        np.maximum(outer, o, out=outer)
        if medulla:
            np.maximum(med, m, out=med)
    return Crop(x0, y0, outer, med)


def rasterise_many(
    jobs: list[tuple[list[Flat], tuple[int, int, int, int]]], medulla: bool = True
) -> list[Crop]:
    """One :class:`Crop` per ``(pieces, window)`` job, all capsules evaluated in a single vectorised pass.

    Why batch: a hand film has ~40 small capsules; evaluated one by one, numpy's
    per-call overhead costs more than the arithmetic. Here every capsule's window
    is laid out in one flat pixel array, computed once, and sliced back.
    """
    crops, runs = [], []
    for c, (flats, (x0, y0, x1, y1)) in enumerate(jobs):
        shape = (y1 - y0, x1 - x0)
        crops.append(
            Crop(x0, y0, np.zeros(shape, np.float32), np.zeros(shape, np.float32) if medulla else None)
        )
        for f in flats:
            for i, j in [(0, len(f.pts) - 1)] if f.straight else [(k, k + 1) for k in range(len(f.pts) - 1)]:
                if f.straight:
                    bx0, by0, bx1, by1 = f.bbox
                else:  # a bent piece: each segment on its own small window
                    r = float(max(f.radius[i], f.radius[j])) + 1.0
                    (px, py), (qx, qy) = f.pts[i].tolist(), f.pts[j].tolist()
                    bx0, by0, bx1, by1 = min(px, qx) - r, min(py, qy) - r, max(px, qx) + r, max(py, qy) + r
                a0, b0 = max(int(bx0), x0), max(int(by0), y0)
                a1, b1 = min(int(bx1) + 1, x1), min(int(by1) + 1, y1)
                if a1 > a0 and b1 > b0:
                    runs.append((c, f, i, j, a0, b0, a1, b1))
    if not runs:
        return crops
    sizes = np.array([(r[6] - r[4]) * (r[7] - r[5]) for r in runs])
    xs = np.concatenate(
        [np.tile(np.arange(a0, a1, dtype=np.float32), b1 - b0) for *_, a0, b0, a1, b1 in runs]
    )
    ys = np.concatenate(
        [np.repeat(np.arange(b0, b1, dtype=np.float32), a1 - a0) for *_, a0, b0, a1, b1 in runs]
    )
    geo = np.array([(*f.pts[i].tolist(), *f.pts[j].tolist(), f.cum[i], f.cum[j]) for _, f, i, j, *_ in runs])
    d = geo[:, 2:4] - geo[:, 0:2]
    length = np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-3)

    def per_pixel(v: np.ndarray) -> np.ndarray:
        return np.repeat(v.astype(np.float32), sizes)

    rx, ry = xs - per_pixel(geo[:, 0]), ys - per_pixel(geo[:, 1])
    ux, uy = per_pixel(d[:, 0] / length), per_pixel(d[:, 1] / length)
    along = rx * ux + ry * uy
    across = ry * ux - rx * uy
    clamped = np.minimum(np.maximum(along, np.float32(0)), per_pixel(length))
    over = along - clamped  # beyond the run's ends: flattened articular caps, round joints inside bent pieces
    first = per_pixel(np.array([1.0 / f.cap if i == 0 else 1.0 for _, f, i, *_ in runs]))
    last = per_pixel(np.array([1.0 / f.cap if j == len(f.pts) - 1 else 1.0 for _, f, _, j, *_ in runs]))
    over = over * np.where(over < 0, first, last)
    d2 = across * across + over * over
    luts = np.concatenate([f.lut for _, f, *_ in runs], axis=1)  # (3, R * LUT)
    gain = (geo[:, 5] - geo[:, 4]) * (LUT - 1) / length
    offset = geo[:, 4] * (LUT - 1) + 0.5 + np.arange(len(runs)) * LUT
    idx = (clamped * per_pixel(gain) + per_pixel(offset)).astype(np.intp)
    r, k = luts[0][idx], luts[1][idx]
    q = d2 / (r * r)
    outer = k * np.sqrt(np.maximum(1.0 - q, 0.0))
    if medulla:
        inner = luts[2][idx]
        med = (k * inner) * np.sqrt(np.maximum(1.0 - q / (inner * inner), 0.0))
    start = 0
    for (c, _, _, _, a0, b0, a1, b1), n in zip(runs, sizes.tolist(), strict=True):
        crop = crops[c]
        sl = (slice(b0 - crop.y0, b1 - crop.y0), slice(a0 - crop.x0, a1 - crop.x0))
        np.maximum(crop.outer[sl], outer[start : start + n].reshape(b1 - b0, a1 - a0), out=crop.outer[sl])
        if medulla:
            np.maximum(crop.med[sl], med[start : start + n].reshape(b1 - b0, a1 - a0), out=crop.med[sl])
        start += n
    return crops


def plate_crop(bone: Bone, cam: Camera, shape: tuple[int, int]) -> Crop | None:
    """A flat bone: filled polygon, denser at its rim, thicker when seen edge-on."""
    import cv2

    poly = cam.project(bone.polygon)
    normal = np.cross(bone.polygon[1] - bone.polygon[0], bone.polygon[2] - bone.polygon[0])
    normal = normal / np.linalg.norm(normal)
    beam = np.array([-np.sin(cam.theta), 0.0, np.cos(cam.theta)])
    thick = bone.thickness / max(abs(float(normal @ beam)), 0.25)
    lo, hi = np.floor(poly.min(0)) - 4, np.ceil(poly.max(0)) + 4
    h, w = shape
    x0, y0 = int(max(lo[0], 0)), int(max(lo[1], 0))
    x1, y1 = int(min(hi[0], w)), int(min(hi[1], h))
    if x1 <= x0 or y1 <= y0:
        return None
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [np.round((poly - (x0, y0)) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    m = mask.astype(np.float32) / 255.0
    sigma = max(2.0, 4.0 * cam.scale)
    rim = np.clip(m - cv2.GaussianBlur(m, (0, 0), sigma), 0, 1)
    outer = thick * (m + 1.5 * rim)
    return Crop(x0, y0, outer.astype(np.float32), (thick * 0.5 * m).astype(np.float32))
