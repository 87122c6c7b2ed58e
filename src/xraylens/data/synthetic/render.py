"""One study, all its views: patient, pose, camera, path lengths, findings, film.

The unit of work is a study, not an image, because the study is where the
label lives: an abnormal study must show its finding in at least one view.
If none of its views ends up showing one (a finding off the film, say), the
study's findings are drawn again with the next ``attempt`` number; the
normal-study pixels never depend on that loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from xraylens.data.synthetic import acquisition as film
from xraylens.data.synthetic import plan as streams
from xraylens.data.synthetic.anatomy import CHAINS, FIT, Bone, Pose, Traits
from xraylens.data.synthetic.findings import (
    KINDS,
    Band,
    Finding,
    Fracture,
    Hardware,
    Lesion,
    check_difficulty,
    sample_findings,
    sample_lookalikes,
)
from xraylens.data.synthetic.marks import draw_band, draw_fracture, draw_hardware, draw_lesion, site_of
from xraylens.data.synthetic.plan import StudyPlan, rng_for
from xraylens.data.synthetic.raster import (
    Camera,
    Crop,
    Flat,
    flatten_many,
    plate_crop,
    rasterise_many,
    window_of,
)
from xraylens.data.synthetic.skeleton import Skeleton, build_skeleton, place

Box = tuple[int, int, int, int, str]  # x0, y0, x1, y1 (x1, y1 exclusive), kind
_HAND_PARTS = ("XR_FINGER", "XR_HAND", "XR_WRIST")
# per body part, the views a study takes in order: (beam angle in deg, pose ranges)
_VIEWS: dict[str, tuple[tuple[float, dict[str, tuple[float, float]]], ...]] = {
    "XR_FINGER": ((0, {"finger_flex": (0.0, 0.12)}), (90, {"finger_flex": (0.1, 0.45)}), (45, {}), (-45, {})),
    "XR_HAND": (
        (0, {"finger_flex": (0.0, 0.1)}),
        (45, {"finger_flex": (0.0, 0.25)}),
        (90, {"finger_flex": (0.1, 0.4)}),
        (0, {}),
    ),
    "XR_WRIST": ((0, {}), (90, {}), (45, {}), (0, {"wrist_dev": (-0.35, -0.2)})),
    "XR_FOREARM": ((0, {}), (90, {}), (0, {}), (90, {})),
    "XR_ELBOW": (
        (0, {"flexion": (0.0, 0.2)}),
        (90, {"flexion": (1.35, 1.75)}),
        (45, {"flexion": (0.0, 0.2)}),
        (-40, {"flexion": (0.0, 0.2)}),
    ),
    "XR_HUMERUS": ((0, {"humeral_rot": (-0.3, 0.2)}), (0, {"humeral_rot": (1.1, 1.5)}), (90, {}), (0, {})),
    "XR_SHOULDER": (
        (0, {"humeral_rot": (-0.7, -0.3)}),
        (0, {"humeral_rot": (1.0, 1.4)}),
        (50, {}),
        (25, {"abduction": (0.6, 1.1)}),
    ),
}
_LONG_BONES = (
    "humerus",
    "radius",
    "ulna",
    "clavicle",
    *(f"{p}{i}" for p in ("mc", "pp") for i in range(1, 6)),
)


@dataclass
class View:
    image: np.ndarray  # (H, W) float32 in [0, 1], before storage
    boxes: list[Box] = field(default_factory=list)
    storage: str = "gray8"


@dataclass(frozen=True)
class StudyState:
    """Everything that all views of one study share."""

    traits: Traits
    skeleton: Skeleton
    mirror: bool
    finger: int
    lookalikes: tuple[Finding, ...]


def patient_traits(seed: int, patient: int) -> tuple[float, ...]:
    r = rng_for(seed, streams.PATIENT, patient)
    age = float(r.uniform(18, 90) if r.random() > 0.12 else r.uniform(6, 16))
    size = float(np.clip(r.normal(1.0, 0.06), 0.85, 1.15) * (0.7 + 0.02 * (age - 6) if age < 16 else 1.0))
    density = float(np.clip(1.1 - 0.006 * max(age - 40, 0) + r.normal(0, 0.06), 0.6, 1.2))
    return (
        age,
        size,
        float(r.uniform(0.92, 1.08)),
        float(r.uniform(0.85, 1.35)),
        density,
        float(r.uniform(0.75, 1.1)),
    )


def study_state(seed: int, plan: StudyPlan) -> StudyState:
    age, size, width, soft, density, cortex = patient_traits(seed, plan.patient)
    r = rng_for(seed, streams.STUDY_ANATOMY, *plan.key)
    spread = tuple(float(v) for v in np.array([-0.25, -0.08, 0.0, 0.08, 0.18]) + r.normal(0, 0.04, 5))
    jitter = tuple(float(v) for v in np.clip(r.normal(1.0, 0.05, 24), 0.88, 1.12))
    traits = Traits(size, width, soft, density, cortex, age < 16, spread, jitter)
    finger = int(r.choice([1, 2, 3, 4, 5], p=[0.15, 0.25, 0.2, 0.2, 0.2]))
    return StudyState(
        traits,
        build_skeleton(traits, CHAINS[plan.part]),
        bool(r.random() < 0.5),
        finger,
        tuple(sample_lookalikes(r, age < 16, list(_LONG_BONES))),
    )


def render_study(
    seed: int, plan: StudyPlan, max_side: int, draw_findings: bool = True, difficulty: str = "realistic",
    kinds: tuple[str, ...] = KINDS,
) -> tuple[list[View], int]:
    """All views of a study and the attempt number whose findings they show.

    ``difficulty`` changes only the findings (see ``findings.make_obvious``):
    normal studies and everything around the findings come out the same.
    """
    check_difficulty(difficulty)
    state = study_state(seed, plan)
    for attempt in range(8):
        findings = _findings(seed, plan, state, attempt, difficulty, kinds)
        views = [
            _view(seed, plan, state, v, max_side, findings[v] if draw_findings else [])
            for v in range(plan.views)
        ]
        if not plan.label or any(view.boxes for view in views) or not draw_findings:
            return views, attempt
    raise RuntimeError(f"could not place a visible finding in {plan.folder} after 8 attempts (seed {seed})")


def _findings(
    seed: int, plan: StudyPlan, state: StudyState, attempt: int, difficulty: str = "realistic",
    kinds: tuple[str, ...] = KINDS,
) -> list[list[Finding]]:
    """Per view, the study's findings that this view shows (every finding shows in at least one view).

    Realistic: some views of an abnormal study miss a finding, as in real
    studies. Easy: every view is meant to show every finding (the same random
    numbers are drawn either way).
    """
    if not plan.label:
        return [[] for _ in range(plan.views)]
    found = sample_findings(
        rng_for(seed, streams.STUDY_FINDINGS, *plan.key, attempt), plan.part, state.finger, difficulty, kinds
    )
    r = rng_for(seed, streams.VIEW_FINDINGS, *plan.key, attempt)
    must = r.integers(plan.views, size=len(found))
    luck = r.random((plan.views, len(found)))
    p_show = [1.0 if isinstance(f, Hardware) else (0.85 if isinstance(f, Lesion) else 0.7) for f in found]
    if difficulty == "easy":
        p_show = [1.0] * len(found)
    return [
        [f for i, f in enumerate(found) if must[i] == v or luck[v, i] < p_show[i]] for v in range(plan.views)
    ]


def _pose(part: str, view: int, r: np.random.Generator) -> tuple[float, Pose]:
    theta, ranges = _VIEWS[part][view % len(_VIEWS[part])]
    kw = {k: float(r.uniform(*v)) for k, v in ranges.items()}
    if part in _HAND_PARTS:
        kw["pronation"] = float(r.uniform(0.85, 1.0) * np.pi)
    elif part in ("XR_FOREARM", "XR_ELBOW"):
        kw.setdefault("pronation", float(r.uniform(0.0, 0.35)))
    kw.setdefault("abduction", float(r.uniform(0.05, 0.3)))
    if part != "XR_ELBOW":
        kw.setdefault("flexion", float(r.uniform(0.0, 0.12)))
    pose = Pose(**kw)
    world = np.radians(theta) - (pose.pronation if part in _HAND_PARTS else 0.0)
    return float(world), pose


def _fit(bones: dict[str, Bone], part: str, finger: int, acq: film.Acquisition, theta: float, mirror: bool):
    """Scale and place the camera so the body part's core fills ``acq.fill`` of the frame."""
    cam = Camera(theta + acq.theta_jitter, acq.tilt, mirror, acq.psi)
    items = [(bones[name.replace("{f}", str(finger))], t0, t1) for name, t0, t1 in FIT[part]]
    pieces = [p for bone, t0, _ in items for p in (bone.pieces if t0 is None else bone.pieces[:1])]
    flats = iter(flatten_many(pieces, cam))
    pts = []
    for bone, t0, t1 in items:
        if t0 is None:
            for _ in bone.pieces:
                box = next(flats).bbox
                pts += [box[:2], box[2:]]
            continue
        flat = next(flats)
        ts = np.clip(np.linspace(t0, t1, 7), 0.0, 1.0)
        c = np.stack([np.interp(ts, flat.cum, flat.pts[:, 0]), np.interp(ts, flat.cum, flat.pts[:, 1])], 1)
        r = np.interp(ts, flat.knots, flat.radius)[:, None]
        pts += list(c - r) + list(c + r)
    pts = np.array(pts)
    lo, hi = pts.min(0), pts.max(0)
    span = np.maximum(hi - lo, 1.0)
    scale = acq.fill * min(acq.width / span[0], acq.height / span[1])
    free = np.array([acq.width, acq.height]) - span * scale
    shift = free * np.array(acq.offset) - lo * scale
    core = (*(lo * scale + shift), *(hi * scale + shift))
    return Camera(
        cam.theta, cam.tilt, mirror, cam.psi, float(scale), (float(shift[0]), float(shift[1]))
    ), core


def _view(seed: int, plan: StudyPlan, state: StudyState, v: int, max_side: int, shown: list[Finding]) -> View:
    ra = rng_for(seed, streams.VIEW_ACQUISITION, *plan.key, v + 1)
    acq = film.sample_acquisition(ra, max_side, plan.part, state.mirror)
    theta, pose = _pose(plan.part, v, rng_for(seed, streams.VIEW_POSE, *plan.key, v + 1))
    limb = place(state.skeleton, pose)
    cam, core = _fit({b.name: b for b in limb}, plan.part, state.finger, acq, theta, state.mirror)
    shape = (acq.height, acq.width)
    unit = max(shape) / 512
    jit = rng_for(seed, streams.VIEW_FINDINGS, *plan.key, v + 1).normal(0, 0.08, 8)
    base = {k: np.zeros(shape, np.float32) for k in ("cortex", "med")}  # the film without findings
    delta: dict[str, np.ndarray] = {}  # what the findings change in it (made on first use)
    metal = np.zeros(shape, np.float32)
    boxes: list[Box] = []
    marks = [(f, True) for f in shown] + [(f, False) for f in state.lookalikes]
    jobs = []
    for bone, flats in _project([b for b in limb if b.kind in ("bone", "plate")], cam):
        if bone.kind == "plate":
            crop = plate_crop(bone, cam, shape)
            if crop is not None:
                _add(base, crop, 1.0)
            continue
        win = window_of(flats, shape)
        if win is not None:
            jobs.append(
                (
                    bone,
                    flats,
                    [(k, f, boxed) for k, (f, boxed) in enumerate(marks) if f.bone == bone.name],
                    win,
                )
            )
    for (bone, flats, mine, _), crop in zip(
        jobs, rasterise_many([(f, w) for _, f, _, w in jobs]), strict=True
    ):
        frac = next(((k, f) for k, f, boxed in mine if boxed and isinstance(f, Fracture)), None)
        broken = _fractured(flats, frac, boxes, jit, shape, unit) if frac else None
        found = _finish_bone(crop, broken, flats, mine, metal, boxes, jit, shape, unit)
        _add(base, crop, bone.density)
        if found is not None:
            if not delta:
                delta.update({k: np.zeros(shape, np.float32) for k in ("cortex", "med")})
            _add(delta, found, bone.density)
            _add(delta, crop, -bone.density)
    soft = _soft_tissue([b for b in limb if b.kind not in ("bone", "plate")], cam, shape)
    rl = rng_for(seed, streams.VIEW_LOOKALIKE, *plan.key, v + 1)
    if rl.random() < 0.3:
        soft += _skin_fold(rl, soft, core, unit)
    tex = film.trabecular(ra, shape, unit)
    clean = (base["cortex"], base["med"])
    bone = (base["cortex"] + delta["cortex"], base["med"] + delta["med"]) if delta else clean
    image = film.develop(ra, acq, soft, bone, clean, tex, metal, state.traits.density)
    image = film.burn_in(film.collimate(image, acq, core), acq)
    return View(np.clip(image, 0, 1), boxes, acq.storage)


def _soft_tissue(volumes: list[Bone], cam: Camera, shape: tuple[int, int]) -> np.ndarray:
    """Soft-tissue path length (mm), drawn at half resolution: it is smooth and it is the largest area."""
    h, w = (shape[0] + 1) // 2, (shape[1] + 1) // 2
    half = Camera(
        cam.theta,
        cam.tilt,
        cam.mirror,
        cam.psi,
        cam.scale / 2,
        ((cam.shift[0] - 0.5) / 2, (cam.shift[1] - 0.5) / 2),
    )
    layers = {k: np.zeros((h, w), np.float32) for k in ("soft", "muscle", "air")}
    jobs = [(bone, flats, window_of(flats, (h, w))) for bone, flats in _project(volumes, half)]
    jobs = [j for j in jobs if j[2] is not None]
    for (bone, _, _), crop in zip(
        jobs, rasterise_many([(f, win) for _, f, win in jobs], medulla=False), strict=True
    ):
        sl = crop.slices
        np.maximum(layers[bone.kind][sl], bone.density * crop.outer, out=layers[bone.kind][sl])
    soft = layers["soft"] + layers["muscle"] - layers["air"]
    return cv2.resize(soft, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def _project(limb: list[Bone], cam: Camera):
    """(bone, its pieces seen by ``cam``) for every bone, projected in one batch."""
    flats = flatten_many([p for b in limb for p in b.pieces], cam)
    i = 0
    for bone in limb:
        yield bone, flats[i : i + len(bone.pieces)]
        i += len(bone.pieces)


def _fractured(
    flats: list[Flat], frac: tuple[int, Fracture], boxes: list[Box], jit, shape, unit: float
) -> Crop | None:
    """A fractured bone's crop (two fragments) and the fracture's box."""
    k, f = frac
    r0, length = float(flats[0].radius.max()), float(np.ptp(flats[0].pts, 0).max())
    pad = 2.0 + r0 * (abs(f.dx) + abs(f.dz) + abs(f.axial)) + (abs(f.ax) + abs(f.az)) * length
    win = window_of(flats, shape, pad)
    if win is None:
        return None
    site = site_of(flats[0], f.t, unit)
    crop, mask, step = draw_fracture(flats, win, site, f, f.angle + jit[k % 8])
    _box(boxes, mask, crop, True, f.kind, step, shape)
    return crop


def _finish_bone(
    clean: Crop,
    found: Crop | None,
    flats: list[Flat],
    mine,
    metal: np.ndarray,
    boxes: list[Box],
    jit,
    shape,
    unit: float,
) -> Crop | None:
    """Draw look-alikes on the bone (both twins), then its findings on a copy; returns that copy (or None).

    ``found`` is the fractured crop when the bone has a complete fracture.
    """

    def mark(crop: Crop, f: Finding, k: int) -> np.ndarray:
        if isinstance(f, Band):
            return draw_band(crop, site_of(flats[0], f.t, unit), f, f.angle + jit[k % 8])
        return draw_lesion(crop, site_of(flats[0], f.t, unit), f)

    for k, f, boxed in mine:
        if not boxed and isinstance(f, Band | Lesion):
            for crop in (clean,) if found is None else (clean, found):
                mark(crop, f, k)
    for k, f, boxed in mine:
        if not boxed or isinstance(f, Fracture):
            continue
        if isinstance(f, Hardware):
            m = draw_hardware(shape, flats[0], f, unit, float(jit[k % 8]))
            metal += m
            ys, xs = np.nonzero(m > 0.4)
            if len(xs):
                boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1, "hardware"))
            continue
        if found is None:
            found = Crop(clean.x0, clean.y0, clean.outer.copy(), clean.med.copy())
        _box(boxes, mark(found, f, k), found, True, f.kind, 0.0, shape)
    return found


def _add(layers: dict[str, np.ndarray], crop: Crop, weight: float) -> None:
    layers["cortex"][crop.slices] += weight * (crop.outer - crop.med)
    layers["med"][crop.slices] += weight * crop.med


def _box(boxes: list[Box], mask: np.ndarray, crop: Crop, keep: bool, kind: str, grow: float, shape) -> None:
    if not keep:
        return
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return
    g = int(np.ceil(grow))
    h, w = shape
    x0, y0 = max(crop.x0 + int(xs.min()) - g, 0), max(crop.y0 + int(ys.min()) - g, 0)
    x1, y1 = min(crop.x0 + int(xs.max()) + 1 + g, w), min(crop.y0 + int(ys.max()) + 1 + g, h)
    if x1 > x0 and y1 > y0:
        boxes.append((x0, y0, x1, y1, kind))


def _skin_fold(r: np.random.Generator, soft: np.ndarray, core, unit: float) -> np.ndarray:
    """A soft-tissue crease: a faint curved line through the soft tissue only (never through air)."""
    x0, y0, x1, y1 = core
    p = np.array([r.uniform(x0, x1), r.uniform(y0, y1)])
    ang = r.uniform(0, np.pi)
    d = np.array([np.cos(ang), np.sin(ang)])
    n = np.array([-d[1], d[0]])
    ts = np.linspace(-1, 1, 9)[:, None] * max(x1 - x0, y1 - y0) * r.uniform(0.2, 0.6)
    pts = p + ts * d + n * (ts**2) * r.uniform(-0.002, 0.002)
    canvas = np.zeros(soft.shape, np.uint8)
    cv2.polylines(
        canvas,
        [np.round(pts * 16).astype(np.int32)],
        False,
        255,
        max(1, int(round(1.5 * unit))),
        cv2.LINE_AA,
        4,
    )
    fold = cv2.GaussianBlur(canvas.astype(np.float32) / 255, (0, 0), max(0.8 * unit, 0.5))
    return fold * float(r.choice([-1, 1]) * r.uniform(2.0, 5.0)) * (soft > 8)
