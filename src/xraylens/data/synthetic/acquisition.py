"""From path lengths to a stored radiograph: exposure, detector, processing, markers, file format.

Everything here is drawn from the view's *acquisition* random stream, which
never sees the study's label. That is the guard against shortcuts: image
size, brightness, noise, collimation, the "L"/"R" marker and the PNG flavour
(8-bit, 16-bit, RGB) have exactly the same distribution in normal and
abnormal studies. The window is set from the image without metal, so an
implant does not shift the brightness of the rest of the film.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# attenuation per mm of path (arbitrary but ordered like the real thing at ~55 kVp)
MU_SOFT, MU_CORTEX, MU_MEDULLA, MU_METAL = 0.021, 0.085, 0.024, 1.5

# the long axis points up for these parts (fingers up), down for the rest (shoulder up)
_DISTAL_UP = ("XR_FINGER", "XR_HAND", "XR_WRIST")


@dataclass(frozen=True)
class Acquisition:
    height: int
    width: int
    psi: float  # in-plane rotation, rad
    fill: float  # share of the frame the body part's core takes
    offset: tuple[float, float]  # where the core sits in the free space, 0..1
    tilt: float
    theta_jitter: float
    kv_soft: float
    kv_bone: float
    texture: float  # trabecular contrast
    gamma: float
    lo_pct: float
    hi_mult: float
    bg: float
    white: float
    noise: float  # quantum noise in log units
    read_noise: float
    blur: float  # px at 512
    unsharp: float
    scatter: float
    latitude: float  # dynamic range compression
    heel: tuple[float, float]
    collimation: (
        tuple[float, float, float, float, float, float] | None
    )  # margins l,t,r,b (0..1), angle, value
    marker: tuple[str, int, float, bool, float]  # text, corner, height (frac), boxed, value
    label_text: tuple[str, int] | None  # technologist annotation, corner
    storage: str  # "gray8", "rgb", "gray16"


def sample_acquisition(rng: np.random.Generator, max_side: int, part: str, left: bool) -> Acquisition:
    landscape = rng.random() < 0.25
    short = int(round(max_side * rng.uniform(0.6, 1.0)))
    height, width = (short, max_side) if landscape else (max_side, short)
    psi = np.pi if part in _DISTAL_UP else (np.pi * float(rng.integers(2)) if part == "XR_FOREARM" else 0.0)
    if landscape and rng.random() < 0.6:
        psi += float(rng.choice([-1, 1])) * np.pi / 2
    psi += float(rng.normal(0, 0.12) if rng.random() < 0.85 else rng.uniform(-0.7, 0.7))
    coll = None
    if rng.random() < 0.3:
        dark = rng.random() < 0.5
        coll = (
            *(float(v) for v in rng.uniform(0, 1, 4)),
            float(rng.normal(0, 0.04)),
            float(rng.uniform(0.0, 0.08) if dark else rng.uniform(0.6, 0.95)),
        )
    side = "L" if left else "R"
    if rng.random() < 0.08:  # mislabelled or other-side markers happen
        side = "R" if left else "L"
    text = side if rng.random() < 0.7 else {"L": "LT", "R": "RT"}[side]
    marker = (
        text,
        int(rng.integers(4)),
        float(rng.uniform(0.035, 0.07)),
        bool(rng.random() < 0.4),
        float(rng.uniform(0.8, 1.0)),
    )
    label_text = None
    if rng.random() < 0.25:
        label_text = (str(rng.choice(["PA", "AP", "LAT", "OBL", "ERECT", "AXIAL"])), int(rng.integers(4)))
    u = rng.random()
    storage = "rgb" if u < 0.05 else ("gray16" if u < 0.08 else "gray8")
    return Acquisition(
        height,
        width,
        psi,
        float(rng.uniform(0.6, 0.9)),
        (float(rng.uniform(0.15, 0.85)), float(rng.uniform(0.15, 0.85))),
        float(rng.normal(0, 0.07)),
        float(rng.normal(0, 0.1)),
        float(rng.uniform(0.85, 1.15)),
        float(rng.uniform(0.8, 1.2)),
        float(rng.uniform(0.08, 0.25)),
        float(rng.uniform(0.75, 1.3)),
        float(rng.uniform(0.3, 3.0)),
        float(rng.uniform(1.0, 1.12)),
        float(rng.uniform(0.0, 0.1)),
        float(rng.uniform(0.88, 1.0)),
        float(rng.uniform(0.004, 0.018)),
        float(rng.uniform(0.002, 0.01)),
        float(rng.uniform(0.4, 0.9)),
        float(rng.uniform(0.0, 0.8)),
        float(rng.uniform(0.0, 0.15)),
        float(rng.uniform(0.2, 0.6)),
        (float(rng.normal(0, 0.08)), float(rng.normal(0, 0.08))),
        coll,
        marker,
        label_text,
        storage,
    )


_BANK: list[np.ndarray] = []  # filled on first use, not at import


def noise(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Standard normal noise, (H, W): a random window (and flip) of a fixed 1024^2 bank.

    Drawing fresh normals costs more than the rest of the film processing; a
    window at a random offset is as good for noise and keeps images reproducible.
    """
    if not _BANK:
        _BANK.append(np.random.default_rng(20261127).standard_normal((1024, 1024), dtype=np.float32))
    bank = _BANK[0]
    h, w = shape
    flip, y, x = (int(v) for v in rng.integers(0, 1 << 30, 3))
    if h > bank.shape[0] or w > bank.shape[1]:
        return rng.standard_normal(shape, dtype=np.float32)
    bank = bank.T if flip & 1 else bank
    out = bank[y % (bank.shape[0] - h + 1) :][:h, x % (bank.shape[1] - w + 1) :][:, :w]
    return out[::-1] if flip & 2 else out


def trabecular(rng: np.random.Generator, shape: tuple[int, int], unit: float) -> np.ndarray:
    """Band-passed noise with a sponge-like look, mean ~0, (H, W)."""
    n = noise(rng, shape)
    s1 = max(0.7 * unit, 0.45)
    band = cv2.GaussianBlur(n, (0, 0), s1) - cv2.GaussianBlur(n, (0, 0), 2.5 * s1)
    band *= 1.0 / (float(band[::4, ::4].std()) + 1e-6)
    return np.tanh(band)


def _lowpass(img: np.ndarray, sigma: float) -> np.ndarray:
    """Wide Gaussian blur computed on a 4x smaller copy (the wide kernels are the slow part)."""
    h, w = img.shape
    small = cv2.resize(img, (max(w // 4, 4), max(h // 4, 4)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(sigma / 4, 0.5))
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def develop(
    rng: np.random.Generator,
    acq: Acquisition,
    soft: np.ndarray,
    bone: tuple[np.ndarray, np.ndarray],
    clean: tuple[np.ndarray, np.ndarray],
    tex: np.ndarray,
    metal: np.ndarray,
    density: float,
) -> np.ndarray:
    """Path lengths (mm) -> processed display image in [0, 1], (H, W) float32.

    ``bone`` is (cortex, medulla) with the findings, ``clean`` the same without
    them. Every image-wide statistic (scatter, equalisation, window, unsharp
    mask) comes from the clean film, so a finding changes its own pixels and
    nothing else: an abnormal film is its normal twin plus the finding.
    """
    h, w = soft.shape
    unit = max(h, w) / 512
    ys = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    xs = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    base = acq.kv_soft * MU_SOFT * np.maximum(soft, 0) + acq.heel[0] * xs + acq.heel[1] * ys

    def attenuation(cortex: np.ndarray, med: np.ndarray) -> np.ndarray:
        return base + acq.kv_bone * density * (
            MU_CORTEX * cortex * (1 + 0.05 * tex) + MU_MEDULLA * med * (1 + acq.texture * tex)
        )

    ref = attenuation(*clean)
    att = ref if bone is clean else attenuation(*bone)
    if acq.scatter:
        glow = acq.scatter * _lowpass(np.exp(-ref), 0.08 * max(h, w)) + 1e-4
        ref, att = -np.log(np.exp(-ref) + glow), (None if att is ref else -np.log(np.exp(-att) + glow))
        att = ref if att is None else att
    # CR/DR processing on log exposure: "equalisation" compresses large-scale thickness differences and
    # an unsharp mask lifts edges (both from the clean film: a finding must not move the rest of the image)
    flat = acq.latitude * _lowpass(ref, 0.06 * max(h, w))
    if acq.unsharp:
        flat = flat - acq.unsharp * (ref - _lowpass(ref, 0.025 * max(h, w)))
        extra = acq.unsharp * (att - ref) if att is not ref else 0.0
    ref = np.maximum(ref - flat, 0.0)
    att = (
        ref
        if att is ref
        else np.maximum(att - flat + extra, 0.0)
        if acq.unsharp
        else np.maximum(att - flat, 0.0)
    )
    sample = ref[::3, ::3]
    lo = float(np.percentile(sample, acq.lo_pct))
    hi = float(np.percentile(sample, 99.7)) * acq.hi_mult
    att = att + MU_METAL * metal + acq.noise * np.exp(np.minimum(0.5 * (att - lo), 1.6)) * noise(rng, (h, w))
    v = cv2.pow(np.clip((att - lo) * (1.0 / max(hi - lo, 1e-3)), 0, 1).astype(np.float32), acq.gamma)
    v = acq.bg + (acq.white - acq.bg) * v
    v = v + acq.read_noise * noise(rng, (h, w))
    sigma = acq.blur * unit
    if sigma >= 0.3:
        v = cv2.GaussianBlur(v, (0, 0), sigma)
    return v.astype(np.float32)


def collimate(v: np.ndarray, acq: Acquisition, core: tuple[float, float, float, float]) -> np.ndarray:
    """Shutter the field outside a (slightly rotated) rectangle that still contains the body part's core."""
    if acq.collimation is None:
        return v
    h, w = v.shape
    ml, mt, mr, mb, ang, value = acq.collimation
    x0, y0, x1, y1 = core
    rect = np.array(
        [
            [ml * x0, mt * y0],
            [x1 + mr * (w - x1), mt * y0],
            [x1 + mr * (w - x1), y1 + mb * (h - y1)],
            [ml * x0, y1 + mb * (h - y1)],
        ]
    )
    centre = rect.mean(0)
    c, s = np.cos(ang), np.sin(ang)
    rect = (rect - centre) @ np.array([[c, -s], [s, c]]).T + centre
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(rect * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    m = mask.astype(np.float32) / 255
    return v * m + value * (1 - m)


def burn_in(v: np.ndarray, acq: Acquisition) -> np.ndarray:
    """Lead letters ("L", "RT", ...) and a technologist's annotation in corners, white like on film."""
    h, w = v.shape
    mask = np.zeros((h, w), np.uint8)
    text, corner, frac, boxed, value = acq.marker
    _text(mask, text, corner, frac * max(h, w), boxed)
    if acq.label_text:
        label, where = acq.label_text
        if where == corner:
            where = (where + 2) % 4
        _text(mask, label, where, 0.028 * max(h, w), False)
    return np.maximum(v, mask.astype(np.float32) * (value / 255))


def _text(mask: np.ndarray, text: str, corner: int, size: float, boxed: bool) -> None:
    h, w = mask.shape
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = size / 22.0
    thick = max(1, int(round(size / 7)))
    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    pad = max(2, int(0.03 * max(h, w)))
    x = pad if corner in (0, 3) else w - pad - tw
    y = pad + th if corner in (0, 1) else h - pad
    cv2.putText(mask, text, (x, y), font, scale, 255, thick, cv2.LINE_AA)
    if boxed:
        m = max(2, thick + 1)
        cv2.rectangle(mask, (x - m, y - th - m), (x + tw + m, y + m), 255, max(1, thick // 2), cv2.LINE_AA)


def encode(v: np.ndarray, storage: str) -> bytes:
    """PNG bytes: 8-bit gray (most), 16-bit gray or 3-channel gray, as found in the wild."""
    v = np.clip(v, 0, 1)
    if storage == "gray16":
        img = np.round(v * 65535).astype(np.uint16)
    else:
        img = np.round(v * 255).astype(np.uint8)
        if storage == "rgb":
            img = cv2.merge([img, img, img])
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover - cv2 only fails on unsupported dtypes
        raise RuntimeError(f"PNG encoding failed for a {img.dtype} image of shape {img.shape}")
    return buf.tobytes()
