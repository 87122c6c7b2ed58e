"""The vocabulary of the synthetic anatomy: pieces, bones, traits, poses, frames, and what each film shows.

A bone is a union of *pieces*: a polyline axis with an elliptical
cross-section (semi-axes ``rx``/``rz``) and a cortical thickness fraction that
vary along the normalised arc length. Soft tissue uses the same primitive;
flat bones (scapula) are polygons with a thickness. The limb itself is built
in :mod:`xraylens.data.synthetic.skeleton`.

Frame: origin at the centre of the humeral head, ``x`` lateral, ``y`` distal
(down the arm), ``z`` anterior, millimetres.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import numpy as np

LUT = 257  # samples of each piece's profile along its length


@dataclass(frozen=True)
class Piece:
    pts: np.ndarray  # (K, 3) axis polyline, mm
    knots: np.ndarray  # (M,) normalised arc length of the profile samples
    rx: np.ndarray  # (M,) cross-section semi-axis along the piece's x (mm)
    rz: np.ndarray  # (M,) cross-section semi-axis along its z (mm)
    cortex: np.ndarray  # (M,) cortical thickness / radius
    roll: float = 0.0  # rotation of the cross-section about the axis (rad)
    cum: np.ndarray | None = None  # (K,) normalised arc length of the vertices (rigid motions keep it)
    table: np.ndarray | None = None  # (3, LUT) rx, rz, cortex at evenly spaced arc lengths
    straight: bool = True  # all vertices on one line (rigid motions keep it)
    cap: float = 1.0  # end caps' length / radius: 1 = hemispherical, less = flatter articular ends


@dataclass(frozen=True)
class Bone:
    name: str
    pieces: tuple[Piece, ...] = ()  # piece 0 is the one findings are placed on (its ``t``)
    kind: str = (
        "bone"  # "bone", "soft" / "muscle" (tissue, union within kind), "air" (removes tissue), "plate"
    )
    density: float = 1.0
    polygon: np.ndarray | None = None  # plate only: (M, 3)
    thickness: float = 0.0  # plate only, mm


@dataclass(frozen=True)
class Traits:
    """What stays the same for every view of one patient (and study)."""

    size: float = 1.0  # lengths
    width: float = 1.0  # bone calibre
    soft: float = 1.0  # soft-tissue thickness
    density: float = 1.0  # bone mineral (osteopenia < 1)
    cortex: float = 1.0  # cortical thickness factor
    young: bool = False  # open growth plates
    spread: tuple[float, ...] = (0.0,) * 5  # finger fan angles (rad)
    jitter: tuple[float, ...] = field(default=(1.0,) * 24)  # per-bone width factors


@dataclass(frozen=True)
class Pose:
    """What changes between views of one study."""

    abduction: float = 0.1  # humerus away from the trunk (rad)
    humeral_rot: float = 0.0  # internal/external rotation (rad)
    flexion: float = 0.0  # elbow (rad)
    pronation: float = 0.0  # radius over ulna, hand with it (rad)
    wrist_dev: float = 0.0  # radial/ulnar deviation (rad)
    finger_flex: float = 0.0  # per joint (rad)


# What the camera must frame per body part: (bone, t0, t1) on piece 0, or whole bone when t0 is None.
# "{f}" is replaced by the study's finger.
FIT: dict[str, tuple[tuple[str, float | None, float | None], ...]] = {
    "XR_SHOULDER": (
        ("humerus", 0.0, 0.2),
        ("glenoid", None, None),
        ("acromion", None, None),
        ("clavicle", 0.6, 1.0),
    ),
    "XR_HUMERUS": (("humerus", -0.02, 1.02),),
    "XR_ELBOW": (("humerus", 0.8, 1.0), ("radius", 0.0, 0.2), ("ulna", 0.0, 0.22)),
    "XR_FOREARM": (("radius", 0.0, 1.0), ("ulna", 0.0, 1.0)),
    "XR_WRIST": (
        ("radius", 0.86, 1.0),
        ("ulna", 0.88, 1.0),
        ("capitate", None, None),
        ("mc2", 0.0, 0.35),
        ("mc5", 0.0, 0.3),
    ),
    "XR_HAND": (
        ("mc1", 0.0, 1.0),
        ("dp2", None, None),
        ("dp3", None, None),
        ("dp5", None, None),
        ("radius", 0.95, 1.0),
        ("ulna", 0.95, 1.0),
    ),
    "XR_FINGER": (("pp{f}", None, None), ("dp{f}", None, None), ("mc{f}", 0.75, 1.0)),
}

# Where findings may sit per body part: (bone, t0, t1) on piece 0.
ELIGIBLE: dict[str, tuple[tuple[str, float, float], ...]] = {
    "XR_SHOULDER": (("humerus", 0.02, 0.16), ("clavicle", 0.65, 0.95)),
    "XR_HUMERUS": (("humerus", 0.08, 0.95),),
    "XR_ELBOW": (("humerus", 0.84, 0.97), ("radius", 0.05, 0.2), ("ulna", 0.06, 0.2)),
    "XR_FOREARM": (("radius", 0.1, 0.95), ("ulna", 0.1, 0.95)),
    "XR_WRIST": (
        ("radius", 0.88, 0.985),
        ("ulna", 0.9, 0.98),
        ("scaphoid", 0.2, 0.8),
        ("mc2", 0.05, 0.3),
        ("mc3", 0.05, 0.3),
    ),
    "XR_HAND": tuple((f"mc{i}", 0.12, 0.9) for i in range(1, 6))
    + tuple((f"pp{i}", 0.12, 0.88) for i in range(1, 6))
    + tuple((f"mp{i}", 0.15, 0.85) for i in range(2, 6)),
    "XR_FINGER": (("pp{f}", 0.12, 0.88), ("mp{f}", 0.15, 0.85), ("dp{f}", 0.2, 0.7), ("mc{f}", 0.78, 0.92)),
}

# Growth plates (bone, t, tilt rad) drawn in young patients: a normal finding, not a fracture.
PHYSES: tuple[tuple[str, float, float], ...] = (
    ("humerus", 0.035, 0.35),
    ("humerus", 0.965, 0.0),
    ("radius", 0.955, 0.1),
    ("ulna", 0.965, 0.0),
    ("radius", 0.04, 0.0),
    ("mc1", 0.07, 0.0),
    ("pp1", 0.08, 0.0),
    ("dp1", 0.1, 0.0),
    *((f"mc{i}", 0.9, 0.0) for i in range(2, 6)),
    *((f"pp{i}", 0.08, 0.0) for i in range(2, 6)),
    *((f"mp{i}", 0.09, 0.0) for i in range(2, 6)),
    *((f"dp{i}", 0.1, 0.0) for i in range(2, 6)),
)


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


_GRID = np.linspace(0.0, 1.0, LUT)


def piece(pts, knots, rx, rz=None, cortex=0.25, roll=0.0, w=1.0, cf=1.0, cap=1.0) -> Piece:
    """A piece of unit-size anatomy (mm at size 1) with widths times ``w`` and cortex times ``cf``.

    The polyline gets a vertex at every profile knot, so the profile is linear
    per segment. The geometry work is cached: every patient shares it and only
    the cheap scaling differs.
    """
    key = (
        tuple(tuple(float(c) for c in p) for p in pts),
        tuple(float(k) for k in knots),
        _key(rx),
        _key(rx if rz is None else rz),
        _key(cortex),
        float(roll),
        float(cap),
    )
    unit = _unit_piece(key)
    if w == 1.0 and cf == 1.0:
        return unit
    table = unit.table * np.array([[w], [w], [cf]], np.float32)
    return dataclasses.replace(unit, rx=unit.rx * w, rz=unit.rz * w, cortex=unit.cortex * cf, table=table)


def _key(v) -> float | tuple[float, ...]:
    return float(v) if np.isscalar(v) else tuple(float(x) for x in v)


@functools.lru_cache(maxsize=4096)
def _unit_piece(key: tuple) -> Piece:
    pts, knots, rx, rz, cortex, roll, cap = key
    knots = np.asarray(knots)
    n = len(knots)
    rx, rz, cortex = (np.full(n, v) if isinstance(v, float) else np.asarray(v) for v in (rx, rz, cortex))
    pts = np.asarray(pts)
    step = pts[1:] - pts[:-1]
    cum = np.concatenate([[0.0], np.cumsum(np.sqrt((step * step).sum(1)))])
    cum = cum / cum[-1] if cum[-1] > 0 else np.linspace(0.0, 1.0, len(pts))
    ts = np.union1d(np.round(cum, 6), np.round(knots, 6)) if n > 2 else cum
    if len(ts) != len(cum):
        pts = np.stack([np.interp(ts, cum, pts[:, k]) for k in range(3)], 1)
    prof = [np.interp(ts, knots, v) for v in (rx, rz, cortex)]
    table = np.stack([np.interp(_GRID, ts, v) for v in prof]).astype(np.float32)
    rel, d = pts - pts[0], pts[-1] - pts[0]
    straight = bool(
        np.linalg.norm(np.cross(rel, d), axis=1).max() < 0.3 * max(float(np.linalg.norm(d)), 1e-9)
    )
    return Piece(pts, ts, prof[0], prof[1], prof[2], roll, ts, table, straight, cap)


def ovoid(a, b, r, rz=None, cortex=0.1, w=1.0) -> Piece:
    return piece([a, b], (0.0, 1.0), r, rz, cortex, w=w)


class Frame:
    """A rigid frame: points given in it are rotated by ``rot``, shifted by ``origin``; ``yaw`` rolls cross-sections."""

    def __init__(self, rot: np.ndarray, origin, yaw: float = 0.0):
        self.rot, self.origin, self.yaw = rot, np.asarray(origin, float), yaw

    def apply(self, p: Piece) -> Piece:
        return Piece(
            p.pts @ self.rot.T + self.origin,
            p.knots,
            p.rx,
            p.rz,
            p.cortex,
            p.roll + self.yaw,
            p.cum,
            p.table,
            p.straight,
            p.cap,
        )

    def point(self, p) -> np.ndarray:
        return np.asarray(p, float) @ self.rot.T + self.origin

    def child(self, rot: np.ndarray, origin, yaw: float = 0.0) -> Frame:
        return Frame(self.rot @ rot, self.point(origin), self.yaw + yaw)


def rotation_about(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation by ``angle`` about unit ``axis`` (Rodrigues)."""
    x, y, z = axis / np.linalg.norm(axis)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def rotation_towards(d: np.ndarray) -> np.ndarray:
    """A rotation taking local +y to ``d`` with local x staying as close to hand x as possible."""
    y = d / np.linalg.norm(d)
    x = np.array([1.0, 0.0, 0.0]) - y[0] * y
    x /= np.linalg.norm(x)
    z = np.array([x[1] * y[2] - x[2] * y[1], x[2] * y[0] - x[0] * y[2], x[0] * y[1] - x[1] * y[0]])
    return np.stack([x, y, z], 1)


# Which parts of the limb can show up on a film of each body part (the rest is not built).
CHAINS: dict[str, tuple[str, ...]] = {
    "XR_SHOULDER": ("girdle", "arm"),
    "XR_HUMERUS": ("girdle", "arm", "forearm"),
    "XR_ELBOW": ("arm", "forearm"),
    "XR_FOREARM": ("arm", "forearm", "hand"),
    "XR_WRIST": ("forearm", "hand"),
    "XR_HAND": ("forearm", "hand"),
    "XR_FINGER": ("forearm", "hand"),
}
