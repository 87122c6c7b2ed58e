"""A parametric upper limb, from the ribs to the finger tips, posed for one view.

Why one skeleton for all seven body parts: a wrist film shows the ends of the
forearm bones and the bases of the metacarpals, a finger film shows the
neighbouring fingers at its edges, a shoulder film shows ribs and clavicle. If
each part were drawn on its own, those context cues would be missing or would
differ between parts in ways a network could latch onto. So the limb is built
once per study (:func:`build_skeleton`: patient traits and study jitter), posed
per view (:func:`place`), and the camera frames the part of it the body part
names (:data:`~xraylens.data.synthetic.anatomy.FIT`).

Bones are defined at unit size in their own joint frames (arm, forearm, radius,
hand, one frame per phalanx); sizes are in millimetres of an average adult.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from xraylens.data.synthetic.anatomy import (
    Bone,
    Frame,
    Piece,
    Pose,
    Traits,
    ovoid,
    piece,
    rot_x,
    rot_y,
    rot_z,
    rotation_about,
    rotation_towards,
)

_LONG = (0.0, 0.1, 0.5, 0.88, 1.0)  # profile knots of a long bone: base, metaphysis, shaft, metaphysis, head


@dataclass(frozen=True)
class Skeleton:
    """Bones in their own frames, built once per study; :func:`place` poses them for one view."""

    traits: Traits
    bones: tuple[tuple[str, Bone], ...]  # (frame name, bone in that frame)


def build_skeleton(t: Traits, chains: tuple[str, ...] = ("girdle", "arm", "forearm", "hand")) -> Skeleton:
    """All bones of the chains for one patient: unit anatomy, widths from the traits, lengths times ``size``."""
    W, J, cx = t.width, t.jitter, min(1.0, t.cortex)
    out: list[tuple[str, Bone]] = []
    if "girdle" in chains:
        out += [("world", b) for b in _girdle(W, cx, t.soft)]
    if "arm" in chains:
        out += [("arm", b) for b in _arm(W * J[0], cx, t.soft)]
    if "forearm" in chains or "hand" in chains:
        fore, radius = _forearm(W, cx, t)
        out += [("radius" if b.kind != "bone" else "forearm", b) for b in fore] + [("radius", radius)]
    if "hand" in chains:
        out += _hand(W, cx, t)
    S = t.size
    sized = [
        (
            f,
            Bone(
                b.name,
                tuple(_sized(p, S) for p in b.pieces),
                b.kind,
                b.density,
                None if b.polygon is None else b.polygon * S,
                b.thickness,
            ),
        )
        for f, b in out
    ]
    return Skeleton(t, tuple(sized))


def _sized(p: Piece, S: float) -> Piece:
    return dataclasses.replace(p, pts=p.pts * S)


def place(sk: Skeleton, pose: Pose) -> list[Bone]:
    """The skeleton's bones in world coordinates (mm) for one pose."""
    frames = _frames(sk.traits, pose)
    return [
        Bone(b.name, tuple(frames[f].apply(p) for p in b.pieces), b.kind, b.density, b.polygon, b.thickness)
        if b.pieces
        else b
        for f, b in sk.bones
    ]


def _frames(t: Traits, pose: Pose) -> dict[str, Frame]:
    S = t.size
    lh, lf = 290 * S, 240 * S
    world = Frame(np.eye(3), (0, 0, 0))
    arm = world.child(rot_z(-pose.abduction) @ rot_y(pose.humeral_rot), (0, 0, 0), pose.humeral_rot)
    fore = arm.child(rot_x(pose.flexion) @ rot_z(0.12), (0, lh + 6, 0))
    # pronation turns the radius about the line from its head to the ulnar head, and the hand with it
    pivot = np.array((11.0, 4.0, 0.0)) * S
    axis = np.array((-12.0 * S, lf, 0.0)) - pivot
    turn = rotation_about(axis, pose.pronation)
    radius = fore.child(turn, pivot - turn @ pivot, pose.pronation)
    hand = radius.child(rot_z(pose.wrist_dev), (0, lf + 9 * S, 0))
    frames = {"world": world, "arm": arm, "forearm": fore, "radius": radius, "hand": hand}
    for i, (bx, by, bz, hx, hy, hz, _) in enumerate(_MC):
        base, head = np.array((bx, by, bz)) * S, np.array((hx, hy, hz)) * S
        u = rot_z(t.spread[i]) @ ((head - base) / np.linalg.norm(head - base))
        perp = np.array([0.0, u[2], -u[1]])  # u x (1, 0, 0): flexion turns the finger towards the palm (+z)
        perp = perp if perp[2] >= 0 else -perp
        joint = head + u * 4.5 * S
        for k, length in enumerate(_PHAL[i]):
            if length == 0:
                continue
            a = pose.finger_flex * (k + 1) * (0.6 if i == 0 else 1.0)
            d = np.cos(a) * u + np.sin(a) * perp
            frames[f"ph{i + 1}{k}"] = hand.child(rotation_towards(d), joint)
            joint = joint + d * (length + 2.4) * S
    return frames


def _arm(W: float, cx: float, soft: float) -> list[Bone]:
    lh = 290
    return [
        Bone(
            "humerus",
            (
                piece(
                    [(6, 14, 0), (9, 45, 0), (7, 0.5 * lh, 0), (4, 0.86 * lh, 0), (3, lh - 14, 1)],
                    _LONG,
                    (15, 11.5, 10.5, 13, 23),
                    (15, 11.5, 10.5, 10, 9.5),
                    (0.1, 0.22, 0.32, 0.18, 0.08),
                    w=W,
                    cf=cx,
                    cap=0.4,
                ),
                ovoid((-4, -3, 0), (-3, 2, 0), 22, cortex=0.07, w=W),
                ovoid((15, 0, 3), (17, 14, 3), 9, cortex=0.08, w=W),
                ovoid((-18, lh - 5, 1), (-3, lh - 4, 1), 11, cortex=0.1, w=W),
                ovoid((4, lh - 5, 4), (18, lh - 6, 4), 10, cortex=0.1, w=W),
                ovoid((-25, lh - 18, -2), (-31, lh - 13, -2), 6.5, cortex=0.12, w=W),
                ovoid((20, lh - 16, 0), (24, lh - 11, 0), 5, cortex=0.12, w=W),
            ),
        ),
        Bone(
            "arm_soft",
            (
                piece(
                    [(3, -20, 0), (4, 60, 0), (3, lh + 15, 0)],
                    (0, 0.3, 1),
                    (50, 44, 40),
                    (48, 42, 38),
                    0,
                    w=soft,
                ),
            ),
            "soft",
            0.9,
        ),
        Bone(
            "arm_muscle",
            (piece([(3, 10, 0), (3, lh - 10, 0)], (0, 1), (34, 28), (34, 26), 0, w=soft),),
            "muscle",
            0.2,
        ),
        Bone(
            "deltoid",
            (piece([(10, -25, 0), (22, 90, 0)], (0, 1), (48, 36), (44, 34), 0, w=soft),),
            "soft",
            0.9,
        ),
    ]


def _girdle(W: float, cx: float, soft: float) -> list[Bone]:
    ribs = []
    for i in range(6):
        a = np.linspace(np.radians(-150), np.radians(55), 8)
        y0 = -25 + 32 * i
        pts = np.stack([-200 + 125 * np.cos(a), y0 + 45 * (a - a[0]) / (a[-1] - a[0]), 100 * np.sin(a)], 1)
        ribs.append(Bone(f"rib{i + 1}", (piece(pts, (0, 1), 5.5, 3.0, 0.35, w=W),), density=0.5))
    poly = np.array(
        [(-40, -20, -12), (-48, 40, -20), (-95, 140, -45), (-130, -35, -60), (-70, -40, -30)], float
    )

    def one(name, pts, knots, rx, rz=None, cortex=0.2, kind="bone", density=1.0, w=W):
        return Bone(
            name, (piece(pts, knots, rx, rz, cortex, w=w, cf=cx if kind == "bone" else 1.0),), kind, density
        )

    return ribs + [
        one("torso", [(-200, -140, 0), (-200, 420, 0)], (0, 1), 150, 110, 0, "soft", w=soft),
        one("lung", [(-185, -50, 0), (-185, 380, 0)], (0, 1), 105, 75, 0, "air", 0.85, w=1.0),
        one("neck", [(-170, -170, -10), (-25, -65, 0)], (0, 1), 45, 40, 0, "soft", 0.9, w=soft),
        Bone("scapula", kind="plate", polygon=poly, thickness=3.5 * W),
        one("glenoid", [(-27, -15, -3), (-27, 15, -3)], (0, 1), 6, 12, 0.15),
        one("scap_neck", [(-31, -8, -6), (-45, 5, -14)], (0, 1), 10, None, 0.15),
        one("scap_border", [(-36, 18, -14), (-92, 135, -44)], (0, 1), (6, 4), None, 0.35),
        one(
            "scap_spine",
            [(-125, -30, -62), (-60, -38, -40), (-10, -42, -20)],
            (0, 0.5, 1),
            (4, 6, 6),
            (5, 8, 8),
            0.3,
        ),
        one(
            "acromion",
            [(-10, -42, -20), (12, -46, -5), (26, -41, 5)],
            (0, 0.5, 1),
            (7, 7.5, 6.5),
            (12, 12, 9),
            0.15,
        ),
        one(
            "coracoid", [(-42, -28, -5), (-30, -33, 12), (-18, -27, 22)], (0, 0.5, 1), (6, 5, 4.5), None, 0.2
        ),
        one(
            "clavicle",
            [(-185, -38, 45), (-130, -52, 48), (-70, -56, 38), (-20, -53, 18), (18, -48, 5)],
            (0, 0.25, 0.5, 0.8, 1),
            (10, 7, 6, 7.5, 9),
            (9, 7, 6, 5, 6),
            (0.1, 0.3, 0.33, 0.25, 0.12),
        ),
    ]


def _forearm(W: float, cx: float, t: Traits) -> tuple[list[Bone], Bone]:
    lf, J = 240, t.jitter
    radius = Bone(
        "radius",
        (
            piece(
                [(11, 13, 0), (13, 32, 2), (17, 0.5 * lf, 3), (15, lf - 25, 0), (12, lf - 3, 0)],
                _LONG,
                (6, 8, 7, 10, 15),
                (6, 7, 6.5, 8, 10),
                (0.15, 0.25, 0.3, 0.18, 0.08),
                w=W * J[1],
                cf=cx,
                cap=0.4,
            ),
            ovoid((11, 6, 0), (11, 11, 0), 9.5, cortex=0.12, w=W),
            ovoid((21, lf - 8, 0), (24, lf + 2, 0), 4, cortex=0.12, w=W),
        ),
    )
    fore = [
        Bone(
            "ulna",
            (
                piece(
                    [
                        (-10, -20, -12),
                        (-10, -6, -9),
                        (-10, 12, -3),
                        (-10, 0.5 * lf, 0),
                        (-12, lf - 8, 0),
                        (-13, lf, 0),
                    ],
                    (0, 0.06, 0.12, 0.5, 0.93, 1),
                    (9, 11, 9, 6, 5, 6.5),
                    (10, 12, 10, 6.5, 5, 6.5),
                    (0.1, 0.12, 0.2, 0.3, 0.2, 0.1),
                    w=W * J[2],
                    cf=cx,
                    cap=0.6,
                ),
                ovoid((-10, 7, 4), (-10, 3, 10), 5, cortex=0.15, w=W),
                ovoid((-16, lf - 2, 0), (-18, lf + 6, 0), 2.5, cortex=0.2, w=W),
            ),
        ),
        Bone(
            "forearm_soft",
            (
                piece(
                    [(0, -15, 0), (0, 0.4 * lf, 0), (1, lf - 12, 0)],
                    (0, 0.4, 1),
                    (44, 36, 26),
                    (40, 32, 19),
                    0,
                    w=t.soft,
                    cap=0.5,
                ),
            ),
            "soft",
            0.9,
        ),
        Bone(
            "forearm_muscle",
            (piece([(0, 5, 0), (0, 0.8 * lf, 0)], (0, 1), (30, 18), (28, 14), 0, w=t.soft),),
            "muscle",
            0.2,
        ),
    ]
    return fore, radius


_CARPALS = (  # name, a, b, rx, rz
    ("scaphoid", (17, 2, 2), (10, 12, 2), 5.0, 6.0),
    ("lunate", (3, 2, 0), (3, 7, 0), 5.5, 7.0),
    ("triquetrum", (-7, 6, -1), (-11, 9, -1), 4.5, 5.5),
    ("pisiform", (-10, 9, 9), (-10, 11, 9), 4.0, 4.0),
    ("trapezium", (19, 15, 4), (23, 20, 5), 5.0, 5.0),
    ("trapezoid", (10, 17, 1), (11, 20, 1), 4.5, 5.0),
    ("capitate", (1, 12, 0), (1, 23, 0), 5.5, 6.5),
    ("hamate", (-9, 13, -1), (-10, 21, -1), 5.0, 6.0),
    ("hamulus", (-7, 17, 8), (-7, 19, 9), 2.5, 2.5),
)
_MC = (
    (24, 27, 6, 37, 57, 14, 1.15),
    (10, 30, 1, 12, 93, 2, 1.0),
    (1, 32, 0, 1, 93, 0, 1.0),
    (-9, 31, -1, -12, 86, -2, 0.95),
    (-17, 29, -3, -22, 79, -5, 0.9),
)  # base xyz, head xyz, width
_PHAL = ((31, 0, 24), (42, 25, 18), (47, 29, 20), (44, 27, 19), (35, 20, 17))  # proximal, middle, distal (mm)
_SHAFT = ((6.2, 5.0, 4.1, 4.6, 5.2), (5.0, 4.0, 3.4, 3.7, 4.2), (0.1, 0.28, 0.38, 0.22, 0.1))
_TUFT = ((5.3, 4.0, 3.1, 3.0, 4.2), (4.2, 3.2, 2.6, 2.2, 2.6), (0.1, 0.3, 0.35, 0.25, 0.15))


def _hand(W: float, cx: float, t: Traits) -> list[tuple[str, Bone]]:
    out = [("hand", Bone(n, (ovoid(a, b, rx, rz, 0.09, w=W),))) for n, a, b, rx, rz in _CARPALS]
    out.append(
        (
            "hand",
            Bone(
                "wrist_soft",
                (
                    piece(
                        [(3, -40, 0), (3, 10, 0), (3, 40, 0)],
                        (0, 0.5, 1),
                        (27, 27, 34),
                        (19, 17, 14),
                        0,
                        w=t.soft,
                        cap=0.6,
                    ),
                ),
                "soft",
                0.9,
            ),
        )
    )
    for i, (bx, by, bz, hx, hy, hz, wf) in enumerate(_MC):
        n, w = i + 1, W * wf * t.jitter[3 + i]
        base, head = (bx, by, bz), (hx, hy, hz)
        mid = ((bx + hx) / 2, (by + hy) / 2, (bz + hz) / 2 - 1.5)
        roll = 1.0 if i == 0 else 0.0
        out.append(
            (
                "hand",
                Bone(
                    f"mc{n}",
                    (
                        piece(
                            [base, mid, head],
                            _LONG,
                            (7, 5.4, 4.4, 5.6, 6.4),
                            (6.6, 5.0, 4.2, 5.8, 6.4),
                            (0.1, 0.25, 0.36, 0.15, 0.08),
                            roll,
                            w=w,
                            cf=cx,
                            cap=0.4,
                        ),
                    ),
                ),
            )
        )
        out.append(
            (
                "hand",
                Bone(
                    f"palm{n}", (piece([base, head], (0, 1), (14, 13), (13, 11), 0, w=t.soft),), "soft", 0.9
                ),
            )
        )
        r = 11.0 if i == 0 else 9.5
        for k, length in enumerate(_PHAL[i]):
            if length == 0:
                continue
            rx, rz, cort = _TUFT if k == 2 else _SHAFT
            frame = f"ph{n}{k}"
            out.append(
                (
                    frame,
                    Bone(
                        ("pp", "mp", "dp")[k] + str(n),
                        (
                            piece(
                                [(0, 0, 0), (0, length, 0)],
                                _LONG,
                                rx,
                                rz,
                                cort,
                                roll,
                                w=w * t.jitter[8 + i],
                                cf=cx,
                                cap=0.35,
                            ),
                        ),
                    ),
                )
            )
            end = length + (6.0 if k == 2 else 2.4)
            out.append(
                (
                    frame,
                    Bone(
                        f"finger_soft{n}{k}",
                        (
                            piece(
                                [(0, -1.2, 0), (0, end, 0)], (0, 1), (r, r - 1.5), (r - 1, r - 2), 0, w=t.soft
                            ),
                        ),
                        "soft",
                        0.9,
                    ),
                )
            )
        if i == 0:  # two sesamoids at the thumb's MCP joint: normal, often mistaken for fragments
            for side in (-1, 1):
                c = (hx + side * 3.5, hy + 1.5, hz + 5.0)
                out.append(
                    (
                        "hand",
                        Bone(f"sesamoid{side}", (ovoid(c, (c[0], c[1] + 2.5, c[2]), 2.3, cortex=0.2, w=W),)),
                    )
                )
    return out
