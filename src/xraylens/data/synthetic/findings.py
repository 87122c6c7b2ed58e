"""Abnormalities (fracture, hardware, lytic lesion) and the normal look-alikes that must not be called abnormal.

A finding is defined once per study in the bone's own terms (which bone, where
along it, which side of its cross-section) and then seen by every view's
camera: a displacement sideways shows in the AP view and hides in the lateral
one, a plate seen face-on shows its screw heads, edge-on its screws. Sizes are
fractions of the bone's projected radius; line widths are pixels at
``max_side = 512`` and scale with the image, so a fracture line is ~1-2.5 px
wide at 512 and mostly gone after a 4x shrink, as in real films.

Look-alikes (growth plates, nutrient canals, bone islands) use the same
drawing code as the findings, are drawn with the same probability in normal
and abnormal studies and never get a box.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from xraylens.data.synthetic.anatomy import ELIGIBLE, PHYSES

KINDS = ("fracture", "hardware", "lesion")
_KIND_P = (0.55, 0.28, 0.17)  # how often each kind is drawn: fractures most, then hardware, then lesions


def check_kinds(kinds: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The finding kinds to draw, in KINDS order; at least one, none unknown."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"findings must be one or more of {', '.join(KINDS)}; got {', '.join(kinds) or 'none'}")
    return tuple(k for k in KINDS if k in kinds)


# "realistic": as subtle as real findings; "easy": what a radiologist would call obvious (see ``make_obvious``)
DIFFICULTIES = ("realistic", "easy")


def check_difficulty(difficulty: str) -> str:
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}; got {difficulty!r}")
    return difficulty


@dataclass(frozen=True)
class Band:
    """A thin lucent line across (part of) a bone: hairline fracture, growth plate or nutrient canal."""

    bone: str
    t: float
    angle: float  # from transverse, rad
    width: float  # px at max_side 512
    depth: float  # 1 = no bone left on the line
    v0: float = -1.5  # extent along the line, fractions of the radius (-1.5..1.5 = all across)
    v1: float = 1.5
    side: float = 0.0  # cross-section angle the crack starts from (one-sided extents flip with it)
    wave: float = 0.0  # jaggedness amplitude, px at 512
    wavelength: float = 0.5  # fractions of the radius
    phase: float = 0.0
    sclerosis: float = 0.0  # dense margin (growth plates)
    kind: str = "fracture"


@dataclass(frozen=True)
class Fracture:
    """A complete fracture: the distal fragment is shifted and tilted as a rigid piece."""

    bone: str
    t: float
    angle: float
    width: float  # px at 512
    wave: float
    wavelength: float
    phase: float
    dx: float  # sideways shift in the cross-section's x / z, fractions of the radius
    dz: float
    axial: float  # along the bone (negative = impaction, fragments overlap)
    ax: float  # angulation seen from the front / from the side, rad
    az: float
    depth: float = 0.7  # share of bone missing along the line (the beam crosses the fracture plane obliquely)
    kind: str = "fracture"


@dataclass(frozen=True)
class Lesion:
    """A rounded change of medullary density: lytic lesion (depth > 0) or bone island (depth < 0)."""

    bone: str
    t: float
    ox: float  # centre offset from the axis, fractions of the medullary radius
    oz: float
    along: float  # semi-axis along the bone, fractions of the radius
    across: float
    depth: float
    rim: float  # sclerotic rim strength
    thin: float  # cortical thinning where it reaches the cortex
    moth: bool  # moth-eaten (permeative) margin
    kind: str = "lesion"


@dataclass(frozen=True)
class Hardware:
    bone: str
    t: float
    kind_of: str  # "plate", "screws", "wire"
    side: float  # cross-section angle of the plate / entry point
    span: float  # plate half-length in arc length; screw/wire spacing
    count: int
    angle: float  # screws/wires: from transverse, rad
    length: float  # wires: length in radii
    scale: float = 1.0  # thickness of plate, screws and wire (1 = realistic)
    kind: str = "hardware"


Finding = Band | Fracture | Lesion | Hardware


def _eligible(part: str, finger: int) -> list[tuple[str, float, float]]:
    return [(b.replace("{f}", str(finger)), t0, t1) for b, t0, t1 in ELIGIBLE[part]]


def sample_findings(
    rng: np.random.Generator, part: str, finger: int, difficulty: str = "realistic",
    kinds: tuple[str, ...] = KINDS,
) -> list[Finding]:
    """The abnormalities of one abnormal study: 1-3, fractures most often, then hardware, then lesions.

    ``difficulty="easy"`` draws exactly the same random numbers and then makes
    each finding obvious (:func:`make_obvious`), so the studies, sites and
    kinds are the same as in the realistic dataset. ``kinds`` restricts what
    is drawn (their relative frequencies kept); all kinds is the default.
    """
    check_difficulty(difficulty)
    kinds = check_kinds(kinds)
    p = [_KIND_P[KINDS.index(k)] for k in kinds]
    p = p if kinds == KINDS else [v / sum(p) for v in p]  # all kinds: exactly the numbers of generator 1.0
    sites = _eligible(part, finger)
    out: list[Finding] = []
    for _ in range(int(rng.choice([1, 2, 3], p=[0.72, 0.22, 0.06]))):
        bone, t0, t1 = sites[int(rng.integers(len(sites)))]
        t = float(rng.uniform(t0, t1))
        kind = rng.choice(kinds, p=p)
        if kind == "fracture":
            out.append(_fracture(rng, bone, t))
        elif kind == "hardware":
            out.append(_hardware(rng, bone, t, t0, t1))
        else:
            out.append(_lesion(rng, bone, t, lytic=True))
    return [make_obvious(f) for f in out] if difficulty == "easy" else out


def _towards(x: float, lo: float, hi: float, target: float) -> float:
    """Map ``x`` from its realistic range [lo, hi] onto [target, 1) keeping its rank (deeper stays deeper)."""
    return target + (1.0 - target) * 0.8 * float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))


# The largest easy lytic lesion, in radii of its bone: semi-axis along the shaft, and across it (the
# medullary canal ends at about 0.7-0.8 of the radius, so a lesion this wide just reaches the cortex).
EASY_LESION_ALONG = 2.4
EASY_LESION_ACROSS = 0.8


def make_obvious(f: Finding) -> Finding:
    """The same finding, made obvious: only magnitudes change, so no new random numbers are drawn.

    * fractures: always complete (an incomplete crack becomes a complete break
      along the same line), 10x wider (10-25 px at 512, still 2.5-6 px after
      a letterbox to 128), 90-98% deep, and displaced by 0.8-1.0 of the bone's
      radius with clear angulation, so a cortical step shows in every view;
    * lytic lesions: 1.5x longer and 1.15x wider, but focal (at most 2.4 radii
      along the bone and 0.8 of the radius across, so a margin shows on every
      side), 93-99% deep, marked cortical thinning. Generator 1.1 made them 3x
      larger: every easy lesion was then wider than the bone itself, and the
      longest ran along most of the shaft, a uniformly paler bone with no edge
      to see (generator 1.2);
    * hardware: 1.6x thicker, plates and screw rows 1.3x longer.

    Still hard for a network trained from random weights: on 800 patients for
    20 epochs none of our from-scratch recipes learned them (README, "What
    learns"); they are for looking at, and for training with ImageNet weights.
    """
    if isinstance(f, Band | Fracture):
        wide = f.width * 10.0
        deep = _towards(f.depth, 0.35, 0.8, 0.9)
        if isinstance(f, Band):  # the incomplete crack: displace along its starting side
            d = 0.8 + 0.2 * float(np.clip((f.v1 - f.v0 - 0.8) / 2.0, 0, 1))
            dx, dz = d * float(np.cos(f.side)), d * float(np.sin(f.side))
            ax, az = 0.15 * float(np.sin(f.side)), -0.15 * float(np.cos(f.side))
            return Fracture(
                f.bone, f.t, f.angle, wide, f.wave, f.wavelength, f.phase, dx, dz, 0.06, ax, az, deep
            )
        mag = float(np.hypot(f.dx, f.dz))
        if mag > 1e-9:  # keep the drawn direction, make the step clearly visible
            d = max(0.8, min(6.0 * mag, 1.0))
            dx, dz = f.dx / mag * d, f.dz / mag * d
        else:  # undisplaced: push sideways in a direction fixed by the line's own phase
            dx, dz = 0.9 * float(np.cos(f.phase)), 0.9 * float(np.sin(f.phase))
        ax, az = f.ax * 3.0, f.az * 3.0
        if abs(ax) + abs(az) < 1e-9:
            ax, az = 0.15 * float(np.sin(f.phase)), -0.15 * float(np.cos(f.phase))
        return dataclasses.replace(
            f, width=wide, depth=deep, dx=dx, dz=dz, axial=abs(f.axial) + 0.06, ax=ax, az=az
        )
    if isinstance(f, Lesion):
        return dataclasses.replace(
            f,
            along=max(f.along, min(f.along * 1.5, EASY_LESION_ALONG)),  # never smaller than realistic
            across=max(f.across, min(f.across * 1.15, EASY_LESION_ACROSS)),
            depth=_towards(f.depth, 0.6, 0.95, 0.93),
            thin=max(f.thin, 0.6),
        )
    return dataclasses.replace(
        f, scale=1.6, span=f.span * (1.3 if f.kind_of != "wire" else 1.0), length=f.length * 1.2
    )


def _fracture(rng: np.random.Generator, bone: str, t: float) -> Band | Fracture:
    angle = float(rng.normal(0, 0.3) if rng.random() < 0.8 else rng.choice([-1, 1]) * rng.uniform(0.6, 0.95))
    width = float(1.0 + 1.5 * rng.beta(1.3, 2.2))  # 1-2.5 px at 512, mostly the thin end
    wave, wl, ph = (
        float(rng.uniform(0.2, 0.8)),
        float(rng.uniform(0.25, 0.8)),
        float(rng.uniform(0, 2 * np.pi)),
    )
    if rng.random() < 0.4:  # incomplete: a crack from one cortex, no displacement
        reach = float(rng.uniform(0.6, 2.0))
        return Band(
            bone,
            t,
            angle,
            width,
            float(rng.uniform(0.35, 0.8)),
            1.3 - reach,
            1.5,
            float(rng.uniform(0, 2 * np.pi)),
            wave,
            wl,
            ph,
        )
    shifted = rng.random() < 0.5  # slight displacement: a cortical step of a fraction of the bone's radius
    dx, dz = rng.normal(0, 0.12, 2) if shifted else (0.0, 0.0)
    tilted = rng.random() < 0.35
    ax, az = rng.normal(0, 0.05, 2) if tilted else (0.0, 0.0)
    axial = float(rng.choice([0.0, rng.uniform(-0.12, -0.03), rng.uniform(0.02, 0.08)], p=[0.6, 0.25, 0.15]))
    return Fracture(
        bone,
        t,
        angle,
        width,
        wave,
        wl,
        ph,
        float(dx),
        float(dz),
        axial,
        float(ax),
        float(az),
        float(rng.uniform(0.35, 0.8)),
    )


def _hardware(rng: np.random.Generator, bone: str, t: float, t0: float, t1: float) -> Hardware:
    kind = str(rng.choice(["plate", "screws", "wire"], p=[0.45, 0.3, 0.25]))
    span = float(rng.uniform(0.08, 0.2)) if kind == "plate" else float(rng.uniform(0.02, 0.06))
    if kind == "plate":
        t = float(np.clip(t, t0 + span * 0.5, t1 - span * 0.5))
    count = int(rng.integers(3, 7)) if kind == "plate" else int(rng.integers(1, 4))
    angle = (
        float(rng.normal(0, 0.3)) if kind == "screws" else float(rng.choice([-1, 1]) * rng.uniform(0.5, 1.1))
    )
    return Hardware(
        bone, t, kind, float(rng.uniform(0, 2 * np.pi)), span, count, angle, float(rng.uniform(4, 9))
    )


def _lesion(rng: np.random.Generator, bone: str, t: float, lytic: bool) -> Lesion:
    across = float(rng.uniform(0.45, 0.85) if lytic else rng.uniform(0.15, 0.3))
    ox, oz = rng.uniform(-0.35, 0.35, 2)
    if not lytic:
        return Lesion(
            bone,
            t,
            float(ox),
            float(oz),
            across * rng.uniform(1, 1.8),
            across,
            -float(rng.uniform(0.5, 1.2)),
            0.0,
            0.0,
            False,
            kind="island",
        )
    return Lesion(
        bone,
        t,
        float(ox),
        float(oz),
        across * float(rng.uniform(1.0, 2.4)),
        across,
        float(rng.uniform(0.6, 0.95)),
        float(rng.uniform(0.2, 0.6) if rng.random() < 0.5 else 0.0),
        float(rng.uniform(0.4, 0.75) if rng.random() < 0.4 else rng.uniform(0.15, 0.3)),
        bool(rng.random() < 0.25),
    )


def sample_lookalikes(rng: np.random.Generator, young: bool, bones: list[str]) -> list[Finding]:
    """Normal variants drawn regardless of the label: growth plates, nutrient canals, bone islands."""
    out: list[Finding] = []
    if young:
        for bone, t, tilt in PHYSES:
            out.append(
                Band(
                    bone,
                    t,
                    tilt + float(rng.normal(0, 0.05)),
                    float(rng.uniform(2.5, 4.5)),
                    float(rng.uniform(0.45, 0.75)),
                    wave=float(rng.uniform(0.8, 1.6)),
                    wavelength=float(rng.uniform(0.9, 1.8)),
                    phase=float(rng.uniform(0, 6.3)),
                    sclerosis=float(rng.uniform(0.15, 0.4)),
                    kind="physis",
                )
            )
    for bone in bones:
        if rng.random() < 0.3:
            lo = float(rng.uniform(0.5, 0.7))
            out.append(
                Band(
                    bone,
                    float(rng.uniform(0.3, 0.7)),
                    float(rng.choice([-1, 1]) * rng.uniform(0.8, 1.1)),
                    float(rng.uniform(0.8, 1.6)),
                    float(rng.uniform(0.35, 0.6)),
                    lo,
                    lo + 0.45,
                    float(rng.uniform(0, 2 * np.pi)),
                    kind="canal",
                )
            )
        if rng.random() < 0.05:
            out.append(_lesion(rng, bone, float(rng.uniform(0.15, 0.85)), lytic=False))
    return out
