#!/usr/bin/env python
# ruff: noqa: E741, UP031
"""Independent synthetic musculoskeletal radiograph generator (MURA v1.1 layout): "data made elsewhere".

usage: python benchmarks/independent_synth.py OUT --patients N --seed S

Why it exists: issue 9 asks that the CPU recipe (`configs/demo_cpu.yaml`) be checked on MURA-format
data made outside the project, with findings of other shapes and contrasts than xraylens's own
generator. This file was written on 2026-12-03 by a helper that was not shown xraylens's code or its
generator (only the MURA v1.1 layout and the boxes.csv columns), and it is never used for tuning:
only to check a finished recipe (README, "What learns"). It needs numpy and OpenCV only.

Model: every image is built as a projected attenuation map A(x, y):
  soft tissue   : union of tapered "limb" cylinders (fat shell + muscle core)
  bones         : solids of revolution rendered in their own (u along axis, v across)
                  frame: outer radius profile R(u) with flared metaphyses and
                  ellipsoidal caps, inner (medullary) radius r(u); projected cortex
                  = 2sqrt(R^2-v^2) - 2sqrt(r^2-v^2), medulla carries a band-pass
                  trabecular texture; then warped into the canvas.
  metal         : anti-aliased polygons (plates, threaded screws, K-wires, nails)
The display value is an H&D-like window of the noisy log-domain signal, followed
by optional edge enhancement, collimation, vignetting, film grain and burned-in
annotations.  Findings are drawn into the bone's local frame (fracture, lesion)
or into the metal layer (hardware) and their boxes are taken from the rendered
masks, clipped to the exposed field.
"""
import argparse
import math
import os
import time

import cv2
import numpy as np

cv2.setNumThreads(1)

PARTS = ['ELBOW', 'FINGER', 'FOREARM', 'HAND', 'HUMERUS', 'SHOULDER', 'WRIST']
PART_W = np.array([0.13, 0.14, 0.10, 0.15, 0.08, 0.18, 0.22])
KINDS = ['fracture', 'hardware', 'lesion']
KIND_W = np.array([0.55, 0.25, 0.20])
HW_TYPES = {
    'FOREARM': (['plate', 'nail', 'screw', 'kwire'], [0.55, 0.2, 0.15, 0.1]),
    'HUMERUS': (['plate', 'nail', 'screw', 'kwire'], [0.45, 0.35, 0.15, 0.05]),
    'ELBOW': (['plate', 'screw', 'kwire'], [0.35, 0.35, 0.3]),
    'SHOULDER': (['plate', 'screw', 'nail'], [0.5, 0.35, 0.15]),
    'WRIST': (['plate', 'kwire', 'screw'], [0.45, 0.3, 0.25]),
    'HAND': (['kwire', 'plate', 'screw'], [0.45, 0.3, 0.25]),
    'FINGER': (['kwire', 'screw', 'plate'], [0.55, 0.3, 0.15]),
}


def unit(a):
    return np.array([math.cos(math.radians(a)), math.sin(math.radians(a))])


# ----------------------------------------------------------------------------
# anatomy description
# ----------------------------------------------------------------------------
def Bn(name, p0, p1, R, Re0=None, Re1=None, **kw):
    b = dict(name=name, p0=np.array(p0, float), p1=np.array(p1, float), R=float(R),
             Re0=float(R if Re0 is None else Re0), Re1=float(R if Re1 is None else Re1),
             ct=0.30, tend=0.17, tmid=0.05, cap0=0.8, cap1=0.8, bend=0.0, w0=None, w1=None,
             small=False, wf=1.0, wl=1.0, wh=1.0, fu=(0.15, 0.85), fit=True, dens=1.0)
    b.update(kw)
    return b


def Sm(name, c, ang, hl, R, **kw):
    """small (carpal-like) bone: ellipsoid with semi-axes hl (along) and R."""
    d = unit(ang)
    c = np.array(c, float)
    kw.setdefault('wh', 0.0)
    kw.setdefault('fu', (0.3, 0.7))
    return Bn(name, c - hl * d, c + hl * d, R, R, R, small=True, ct=0.13, tend=0.2,
              tmid=0.2, cap0=99.0, cap1=99.0, **kw)


def chain(base, ang, segs, gap, flexes):
    out, p, a = [], np.array(base, float), ang
    for i, (nm, ln, R, Re0, Re1, kw) in enumerate(segs):
        a += flexes[i]
        d = unit(a)
        p1 = p + ln * d
        out.append(Bn(nm, p, p1, R, Re0, Re1, **kw))
        p = p1 + gap * d
    return out, p


def soft_for(bones, k, extra=0.0):
    return [(b['p0'].copy(), b['p1'].copy(), k * b['Re0'] + extra, k * b['Re1'] + extra)
            for b in bones]


def lay_forearm(ar, vp):
    lam = vp['lat']
    L = 430 * ar.uniform(0.94, 1.04)
    rm = ar.uniform(0.85, 1.15)
    sp = 26 * (1 - 0.8 * lam)
    y0, y1 = -L / 2, L / 2
    bones = [
        Bn('radius', (-sp, y0), (-0.45 * sp, y1), 11 * rm, 21 * rm, 12 * rm, cap0=0.55, cap1=0.75,
           bend=8 * ar.uniform(0.5, 1.3) * (1 - 0.5 * lam), w0=28 * rm, w1=14 * rm, wf=1.3,
           fu=(0.05, 0.9)),
        Bn('ulna', (sp, y0 + 10), (0.55 * sp, y1 + 12), 9.5 * rm, 11 * rm, 19 * rm, cap0=0.9,
           cap1=0.7, bend=-3 * ar.uniform(0, 1), w0=12 * rm, w1=32 * rm, fu=(0.1, 0.9)),
    ]
    for k, x in enumerate([-24, -1, 20]):
        bones.append(Sm('carpal', (x * (1 - 0.6 * lam), y0 - 26 - 4 * (k % 2)),
                        90 + ar.uniform(-30, 30), 10 * rm, 10 * rm * ar.uniform(0.8, 1.1),
                        wf=0.15, wl=0.3, fit=False))
    bones.append(Bn('humerus', (0, y1 + 230), (0, y1 + 16), 15 * rm, 15 * rm, 31 * rm, cap1=0.32, fossa=0.4,
                    w1=38 * rm, wf=0.1, wl=0.2, wh=0, fit=False))
    caps = [((0, y0 - 80), (0, y1 + 90), 44 * rm, 64 * rm)]
    fit = [(0, y0 - 10), (0, y1 + 10), (-55, 0), (55, 0)]
    return bones, caps, {}, fit


def lay_humerus(ar, vp):
    L = 420 * ar.uniform(0.95, 1.04)
    rm = ar.uniform(0.85, 1.15)
    y0, y1 = -L / 2, L / 2
    lam = vp['lat']
    bones = [Bn('humerus', (0, y0), (0, y1), 14.5 * rm, 36 * rm, 31 * rm, cap0=0.95, cap1=0.32, fossa=0.4 * (1 - lam),
                w0=30 * rm, w1=36 * rm, bend=5 * ar.uniform(-1, 1), fu=(0.1, 0.9))]
    bones.append(Sm('glenoid', (-40 * rm - 10, y0 + 6), 90, 30 * rm, 10 * rm, wf=0.05, wl=0.2,
                    fit=False))
    bones.append(Bn('acromion', (-40, y0 - 52), (45, y0 - 46), 9 * rm, 10 * rm, 12 * rm, wf=0.1,
                    wl=0.1, wh=0, fit=False))
    fl = math.radians(vp['flex'] * 0.6)
    def F(x, y):
        x = x * (1 - 0.7 * lam)
        return (x * math.cos(fl) - y * math.sin(fl), y1 + x * math.sin(fl) + y * math.cos(fl))
    bones.append(Bn('ulna', F(10, -10), F(14, 230), 9 * rm, 18 * rm, 9 * rm, cap0=0.7,
                    w0=26 * rm, wf=0.1, wl=0.1, wh=0, fit=False))
    bones.append(Bn('radius', F(-16, 14), F(-20, 230), 9 * rm, 12 * rm, 10 * rm, cap0=0.5,
                    wf=0.1, wl=0.1, wh=0, fit=False))
    caps = [((0, y0 - 30), (0, y1 + 10), 74 * rm, 58 * rm), ((-170, y0 - 50), (10, y0 - 20), 120, 95),
            (F(0, 0), F(0, 260), 58 * rm, 48 * rm)]
    fit = [(0, y0 - 20), (0, y1 + 20), (-60, 0), (60, 0)]
    return bones, caps, {}, fit


def lay_elbow(ar, vp):
    lam = vp['lat']
    rm = ar.uniform(0.85, 1.15)
    fl = math.radians(vp['flex'])
    def F(x, y):
        x = x * (1 - 0.7 * lam)
        return (x * math.cos(fl) - y * math.sin(fl), x * math.sin(fl) + y * math.cos(fl))
    bones = [
        Bn('humerus', (0, -330), (0, -8), 15.5 * rm, 15.5 * rm, 34 * rm, cap1=0.4, w1=36 * rm,
           fu=(0.6, 0.95), bend=4 * ar.uniform(-1, 1), fossa=0.45 * (1 - lam)),
        Sm('trochlea', (9 * (1 - 0.7 * lam), -12 * rm), 0, 15 * rm * (1 - 0.5 * lam), 10 * rm, wf=0.3, wl=0.4, dens=0.55),
        Sm('capitellum', (-19 * (1 - 0.7 * lam), -10 * rm), 0, 11 * rm * (1 - 0.3 * lam), 10 * rm, wf=0.3, wl=0.4, dens=0.55),
        Bn('ulna', F(9, -30), F(16, 300), 9.5 * rm, 20 * rm, 10 * rm, cap0=0.7, w0=30 * rm,
           fu=(0.03, 0.45)),
        Bn('radius', F(-21, 4), F(-27, 300), 9.5 * rm, 13 * rm, 16 * rm, cap0=0.5, w0=12 * rm,
           fu=(0.02, 0.4), bend=5 * ar.uniform(0, 1)),
    ]
    caps = [((0, -350), (0, 0), 64 * rm, 58 * rm), (F(0, 0), F(0, 330), 58 * rm, 46 * rm)]
    fit = [(0, -160), (0, 0), F(0, 160), (-60, 0), (60, 0)]
    return bones, caps, {}, fit


def _carpals(ar, c, rm, y_off=0.0, wf=0.3):
    spec = [('scaphoid', -28, 10, 55, 17, 10), ('lunate', -5, 13, 90, 12, 11),
            ('triquetrum', 16, 10, 100, 10, 9.5), ('pisiform', 21, 17, 90, 7, 7),
            ('trapezium', -39, -19, 70, 11, 10), ('trapezoid', -23, -23, 90, 9, 9),
            ('capitate', -4, -22, 90, 18, 11), ('hamate', 16, -19, 100, 14, 11)]
    out = []
    for nm, x, y, a, hl, R in spec:
        j = ar.uniform(-2, 2, size=2)
        out.append(Sm(nm, ((x + j[0]) * c * rm, (y + j[1]) * rm + y_off), a + ar.uniform(-12, 12),
                      hl * rm, R * rm, wf=(wf * 2.5 if nm == 'scaphoid' else wf), wl=0.6))
    return out


def lay_wrist(ar, vp):
    lam = vp['lat']
    c = 1 - 0.65 * lam
    rm = ar.uniform(0.88, 1.12)
    bones = [
        Bn('radius', (-20 * c, 330), (-17 * c, 28), 13 * rm, 13 * rm, 28 * rm, cap1=0.45, w1=34 * rm,
           wf=1.8, fu=(0.72, 0.96), bend=3 * ar.uniform(-1, 1)),
        Bn('ulna', (30 * c, 330), (27 * c, 36), 10 * rm, 10 * rm, 12 * rm, cap1=0.8, w1=14,
           fu=(0.75, 0.97), wf=0.4),
    ]
    bones += _carpals(ar, c, rm)
    xs, angs = [-24, -7, 9, 24], [-8, -2, 4, 10]
    lens = [150, 145, 132, 122]
    spread = vp['spread']
    fingers = []
    for i in range(4):
        segs = [('metacarpal', lens[i] * rm, 7.5 * rm, 10 * rm, 11 * rm, dict(fu=(0.1, 0.9), wf=0.5)),
                ('phalanx', 80 * rm, 7 * rm, 9.5 * rm, 9 * rm, dict(fit=False, wf=0.2))]
        bb, _ = chain((xs[i] * c * rm, -45 * rm), -90 + angs[i] * spread * c, segs, 6, [0, 0])
        fingers += bb
    tb, _ = chain((-44 * c * rm, -30 * rm), -90 - 35 * spread * c,
                  [('metacarpal', 92 * rm, 8.5 * rm, 11 * rm, 11 * rm, dict(wf=0.4)),
                   ('phalanx', 60 * rm, 7.5 * rm, 10 * rm, 9 * rm, dict(fit=False, wf=0.2))], 6, [0, 0])
    bones += fingers + tb
    caps = [((0, 340), (0, 20), 64 * rm, 58 * rm), ((0, 10), (0, -200), 56 * rm, 70 * rm * c + 10)]
    caps += soft_for(fingers + tb, 2.2)
    fit = [(0, 170), (0, -160), (-70, 0), (70, 0)]
    return bones, caps, {}, fit


def lay_hand(ar, vp):
    lam = vp['lat']
    c = 1 - 0.65 * lam
    rm = ar.uniform(0.9, 1.1)
    spread = vp['spread']
    bones = [
        Bn('radius', (-22 * c, 340), (-19 * c, 200), 11 * rm, 11 * rm, 23 * rm, cap1=0.45, w1=28 * rm,
           fu=(0.75, 0.95), wf=0.5, fit=False),
        Bn('ulna', (24 * c, 340), (20 * c, 206), 8 * rm, 8 * rm, 10 * rm, cap1=0.8, wf=0.2, fit=False),
    ]
    cb = _carpals(ar, c * 0.85, rm * 0.85, y_off=182, wf=0.15)
    bones += cb
    xs = [-21, -6, 8, 21]
    angs = [-9, -2, 5, 12]
    mcl = np.array([118, 113, 104, 96]) * ar.uniform(0.95, 1.05)
    ppl = np.array([68, 74, 70, 56]) * ar.uniform(0.95, 1.05)
    mpl = np.array([40, 46, 43, 32])
    dpl = np.array([27, 29, 27, 24])
    fingers = []
    fl = vp['flex']
    for i in range(4):
        segs = [('metacarpal', mcl[i] * rm, 5.6 * rm, 7.6 * rm, 8.4 * rm, dict(wf=1.2)),
                ('phalanx', ppl[i] * rm, 5.2 * rm, 7.2 * rm, 6.6 * rm, dict(wf=1.0)),
                ('phalanx', mpl[i] * rm, 4.5 * rm, 6.2 * rm, 5.6 * rm, dict(wf=0.8, wl=0.5)),
                ('phalanx', dpl[i] * rm, 3.8 * rm, 5.6 * rm, 4.8 * rm, dict(cap1=0.6, wf=0.8, wl=0.2))]
        conv = (0 - angs[i]) * 0.15
        bb, _ = chain((xs[i] * c * rm, 152 * rm), -90 + angs[i] * spread * c, segs, 5 * rm,
                      [0, conv + fl * 0.3, fl * 0.4, fl * 0.3])
        fingers += bb
    tb, tip = chain((-34 * c * rm, 160 * rm), -90 - 40 * spread * c - 8 * lam,
                    [('metacarpal', 70 * rm, 6.2 * rm, 8.4 * rm, 8.4 * rm, dict(wf=1.0)),
                     ('phalanx', 48 * rm, 5.6 * rm, 7.6 * rm, 6.8 * rm, dict(wf=0.8)),
                     ('phalanx', 34 * rm, 4.6 * rm, 6.4 * rm, 5.2 * rm, dict(cap1=0.6, wf=0.6, wl=0.2))],
                    5 * rm, [0, 8, 4])
    bones += fingers + tb
    mchead = tb[0]['p1']
    bones.append(Sm('sesamoid', mchead + np.array([3.0, 3.0]), 90, 3.2 * rm, 3.0 * rm, wf=0, wl=0))
    caps = [((0, 350), (0, 185), 46 * rm, 44 * rm)]
    mc = fingers[0::4]
    caps += [(m['p0'] + np.array([0.0, 30.0]), m['p1'], 19 * rm, 17 * rm) for m in mc]
    caps += [(tb[0]['p0'] + np.array([8.0, 10.0]), tb[0]['p1'], 24 * rm, 15 * rm)]
    caps += soft_for([b for i, b in enumerate(fingers) if i % 4 != 0], 1.9)
    caps += soft_for(tb, 2.0)
    caps += [((b['p0'] * 0.5 + b['p1'] * 0.5), b['p1'], 16 * rm, 15 * rm) for b in mc[1:3]]
    fit = [(0, 220), (0, -190), (-110, 0), (90, 0)]
    return bones, caps, {}, fit


def lay_finger(ar, vp):
    lam = vp['lat']
    rm = ar.uniform(0.88, 1.12)
    thumb = ar.random() < 0.2
    nb = ar.random() < 0.55
    nb_side = 1 if ar.random() < 0.5 else -1
    fl = vp['flex']
    if thumb:
        segs = [('metacarpal', 230 * rm, 15 * rm, 18 * rm, 21 * rm, dict(wf=0.6, fu=(0.5, 0.95))),
                ('phalanx', 125 * rm, 14 * rm, 19 * rm, 17 * rm, dict(wf=1.2)),
                ('phalanx', 85 * rm, 11 * rm, 16 * rm, 13 * rm, dict(cap1=0.6, wf=1.0, wl=0.5))]
        flex = [0, fl * 0.5, fl * 0.6]
    else:
        segs = [('metacarpal', 230 * rm, 14 * rm, 17 * rm, 20 * rm, dict(wf=0.5, fu=(0.5, 0.95))),
                ('phalanx', 140 * rm, 12.5 * rm, 17 * rm, 15.5 * rm, dict(wf=1.2)),
                ('phalanx', 85 * rm, 10.5 * rm, 14.5 * rm, 13 * rm, dict(wf=1.0)),
                ('phalanx', 58 * rm, 8.5 * rm, 12.5 * rm, 10.5 * rm, dict(cap1=0.6, wf=0.8, wl=0.4))]
        flex = [0, fl * 0.4, fl * 0.6, fl * 0.4]
    main, _ = chain((0, 440 * rm), -90, segs, 8 * rm, flex)
    main[0]['fit'] = False
    bones = list(main)
    caps = soft_for(main[1:], 2.0) + [(main[0]['p0'], main[0]['p1'], 52 * rm, 40 * rm)]
    if nb:
        off = nb_side * 78 * rm * (1 - 0.75 * lam)
        s2 = [(n, l * 0.92, R * 0.95, a * 0.95, b * 0.95, dict(kw, fit=False, wf=0.1, wl=0.1, wh=0))
              for n, l, R, a, b, kw in segs]
        side, _ = chain((off, 470 * rm), -90 + nb_side * 6, s2, 8 * rm, flex)
        bones += side
        caps += soft_for(side, 1.9)
    fit = [main[1]['p0'] + np.array([0, 40]), main[-1]['p1'] + np.array([0, -12]),
           main[2]['p0'] + np.array([-50, 0]), main[2]['p0'] + np.array([50, 0])]
    return bones, caps, {}, fit


def lay_shoulder(ar, vp):
    rm = ar.uniform(0.9, 1.1)
    abd = vp['abd']
    head = np.array([36.0, -96.0])
    d = unit(90 - abd)
    bones = [Bn('humerus', head, head + 400 * d, 22 * rm, 50 * rm, 22 * rm, cap0=0.95, w0=36 * rm,
                fu=(0.04, 0.5), bend=-4)]
    bones.append(Sm('glenoid', (-16, -50), 95, 36 * rm, 13 * rm, wf=0.3, wl=0.5))
    bones.append(Bn('acromion', (-60, -150), (64, -138), 10 * rm, 11 * rm, 15 * rm, cap1=0.7, wf=0.4,
                    wl=0.3, wh=0.3))
    bones.append(Bn('clavicle', (-320, -210), (30, -160), 11 * rm, 14 * rm, 13 * rm,
                    bend=14 * ar.uniform(0.6, 1.4), fu=(0.25, 0.8), wf=1.4, ct=0.25))
    bones.append(Sm('coracoid', (-26, -104), 30, 20 * rm, 7 * rm, wf=0.1, wl=0.2))
    scap = [(-40, -90), (-50, -30), (-70, 40), (-120, 150), (-165, 245), (-190, 240), (-215, 140),
            (-240, -60), (-180, -95), (-60, -118)]
    spine = [(-240, -80), (-60, -140)]
    ribs = []
    for k in range(6):
        y = -150 + 78 * k + ar.uniform(-8, 8)
        t = np.linspace(0, 1, 14)
        xs = -380 + 330 * t
        ys = y + 90 * (1 - t) ** 2 - 20 * t + 40 * t ** 3 + ar.uniform(-10, 10) * t
        ribs.append(np.stack([xs, ys], 1))
    extras = dict(scap=np.array(scap, float), spine=np.array(spine, float), ribs=ribs,
                  lung=((-270, 160), (150, 290)))
    caps = [((-330, -80), (-230, 300), 210, 230), ((-200, -110), (40, -80), 120, 115),
            (head, head + 420 * d, 92 * rm, 74 * rm)]
    fit = [(-170, -220), (140, -220), (-170, 230), (140, 230)]
    return bones, caps, extras, fit


LAYOUT = dict(FOREARM=lay_forearm, HUMERUS=lay_humerus, ELBOW=lay_elbow, WRIST=lay_wrist,
              HAND=lay_hand, FINGER=lay_finger, SHOULDER=lay_shoulder)


# ----------------------------------------------------------------------------
# bone geometry in canvas coordinates
# ----------------------------------------------------------------------------
def geom(b):
    d = b['p1'] - b['p0']
    L = max(float(np.hypot(*d)), 2.0)
    eu = d / L
    ev = np.array([-eu[1], eu[0]])
    return L, eu, ev


def radius_profile(b, u, L):
    R, Re0, Re1 = b['R'], b['Re0'], b['Re1']
    w0 = b['w0'] or 1.2 * Re0
    w1 = b['w1'] or 1.2 * Re1
    up = np.clip(u, 0, None)
    lp = np.clip(L - u, 0, None)
    r = R + (Re0 - R) * np.exp(-(up / w0) ** 2) + (Re1 - R) * np.exp(-(lp / w1) ** 2)
    c0 = min(b['cap0'] * Re0, L / 2)
    c1 = min(b['cap1'] * Re1, L / 2)
    f = np.ones_like(u)
    m = u < c0
    f[m] = np.sqrt(np.clip(1 - ((c0 - u[m]) / c0) ** 2, 0, 1))
    m = u > L - c1
    f[m] = np.sqrt(np.clip(1 - ((u[m] - (L - c1)) / c1) ** 2, 0, 1))
    return (r * f).astype(np.float32)


def inner_profile(b, u, L, r):
    if b['small']:
        ct = np.full_like(u, b['ct'] * b['R'])
    else:
        sh = 0.22 + 0.78 * np.exp(-((u - L / 2) / (0.3 * L)) ** 2)
        ct = b['ct'] * b['R'] * sh
    ct = np.maximum(np.minimum(ct, 0.85 * r), np.minimum(1.1, r))
    return np.clip(r - ct, 0, None).astype(np.float32)


def trab_profile(b, u, L):
    if b['small']:
        return np.full_like(u, b['tend'])
    we0, we1 = 1.7 * b['Re0'], 1.7 * b['Re1']
    e = np.exp(-(np.clip(u, 0, None) / we0) ** 2) + np.exp(-(np.clip(L - u, 0, None) / we1) ** 2)
    return (b['tmid'] + (b['tend'] - b['tmid']) * np.clip(e, 0, 1)).astype(np.float32)


def local_to_canvas(b, u, v):
    L, eu, ev = geom(b)
    u = np.asarray(u, float)
    v = np.asarray(v, float)
    uu = np.clip(u / L, 0, 1)
    v2 = v + b['bend'] * 4 * uu * (1 - uu)
    return b['p0'][None, :] + u[..., None] * eu[None, :] + v2[..., None] * ev[None, :]


def smooth_noise(rng, shape, s):
    n = rng.standard_normal(shape, dtype=np.float32)
    return cv2.GaussianBlur(n, (0, 0), s)


def render_bone(b, A, FM, mu_c, rng, tex_s, fr=None, le=None):
    """Adds the bone attenuation into A (canvas); finding mask into FM."""
    H, W = A.shape
    L, eu, ev = geom(b)
    Rm = max(b['R'], b['Re0'], b['Re1'])
    pad = 4
    vmax = Rm * 1.1 + abs(b['bend']) + pad + 8
    nu = int(math.ceil(L + 2 * pad))
    nv = int(math.ceil(2 * vmax))
    # canvas ROI
    corners = local_to_canvas(dict(b, bend=0.0), np.array([-pad, -pad, L + pad, L + pad]),
                              np.array([-vmax, vmax, -vmax, vmax]))
    x0 = int(max(0, math.floor(corners[:, 0].min() - abs(b['bend']) - 2)))
    y0 = int(max(0, math.floor(corners[:, 1].min() - abs(b['bend']) - 2)))
    x1 = int(min(W, math.ceil(corners[:, 0].max() + abs(b['bend']) + 2)))
    y1 = int(min(H, math.ceil(corners[:, 1].max() + abs(b['bend']) + 2)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    u = np.arange(nu, dtype=np.float32) - pad
    v = np.arange(nv, dtype=np.float32) - vmax
    U = u[None, :]
    V = v[:, None]
    uu = np.clip(U / L, 0, 1)
    Vb = V - b['bend'] * 4 * uu * (1 - uu)
    Vb = np.broadcast_to(Vb, (nv, nu)).astype(np.float32)
    Uf = np.broadcast_to(U, (nv, nu))
    r = radius_profile(b, u, L)
    ri = inner_profile(b, u, L, r)
    td = trab_profile(b, u, L)
    fmask = None
    rfield = np.broadcast_to(r[None, :], (nv, nu))
    rifield = np.broadcast_to(ri[None, :], (nv, nu))
    lucent = None
    if fr is not None:
        uf = fr['uf'] * L
        ph = fr['phi']
        cph, sph = math.cos(ph), math.sin(ph)
        s = (Uf - uf) * cph - Vb * sph
        t = (Uf - uf) * sph + Vb * cph
        ts = fr['jag_t'] * (Rm * 1.4)
        sj = s - np.interp(t, ts, fr['jag'])
        side = (sj > 0).astype(np.float32)
        if fr['step'] != 0 or fr['ang'] != 0:
            sh = fr['step'] + np.clip(fr['ang'] * s, -6, 6)
            Vb = Vb - side * sh
        if fr['buckle'] > 0:
            bump = fr['buckle'] * np.exp(-((u - uf) / fr['bw']) ** 2).astype(np.float32)
            bs = fr['bside']
            on = (Vb * bs > 0).astype(np.float32)
            rfield = rfield + bump[None, :] * on
            rifield = rifield + 0.4 * bump[None, :] * on
        # lucent line
        wv = fr['w'] * (1 + fr['wvar'] * np.sin(t * fr['wf'] + fr['wph']))
        gap = np.clip(1 - (np.abs(sj) - wv / 2) / 0.8, 0, 1)
        ext = np.ones_like(t)
        if fr['ta'] is not None:
            ta = fr['ta'] * Rm
            ext = np.clip((t * fr['tside'] - ta) / 2.5 + 0.5, 0, 1)
        lucent = gap * ext * fr['depth']
    To = 2 * np.sqrt(np.clip(rfield ** 2 - Vb ** 2, 0, None))
    Ti = 2 * np.sqrt(np.clip(rifield ** 2 - Vb ** 2, 0, None))
    g1 = cv2.GaussianBlur(rng.standard_normal((nv, nu), dtype=np.float32), (0, 0),
                          sigmaX=tex_s * b.get('tx', 1.5), sigmaY=tex_s)
    g2 = cv2.GaussianBlur(g1, (0, 0), tex_s * 2.5)
    bp = g1 - g2
    bp /= (bp.std() + 1e-6)
    tex = 1 + 0.3 * np.tanh(1.2 * bp)
    Bl = mu_c * b['dens'] * ((To - Ti) + td[None, :] * Ti * tex)
    Bl = Bl.astype(np.float32)
    if b.get('physis', 0) > 0:
        for end in (0, 1):
            pu = (b['Re0'] * 1.0) if end == 0 else (L - b['Re1'] * 1.0)
            wig = 1.5 * np.sin(Vb * 0.25 + end)
            Bl *= 1 - 0.55 * np.exp(-((Uf - pu - wig) / (b['physis'])) ** 2)
    if b.get('fossa', 0) > 0:
        pu = L - 1.05 * b['Re1']
        Bl *= 1 - b['fossa'] * np.exp(-((Uf - pu) ** 2 / (0.4 * b['Re1']) ** 2 + Vb ** 2 / (0.3 * b['Re1']) ** 2))
    if lucent is not None:
        inside = np.clip(To / 2.0, 0, 1)
        Bl *= (1 - lucent)
        fm = (lucent > 0.12 * fr['depth']).astype(np.float32) * (To > 1.0)
        if fr['buckle'] > 0:
            bz = ((np.abs(Uf - uf) < 1.3 * fr['bw']) & (Vb * fr['bside'] > rfield - fr['buckle'] - 3)
                  & (To > 0.3)).astype(np.float32)
            fm = np.maximum(fm, bz)
        fmask = fm * inside
    if le is not None:
        ul = le['uf'] * L
        iu = int(np.clip(ul + pad, 0, nu - 1))
        rr_loc = float(ri[iu])
        rl = float(np.clip(le['rf'] * max(rr_loc, 1.0), 4.0, 15.0))
        rl = min(rl, max(4.0, 0.95 * float(r[iu])))
        ext = le['ax'] * (1 + le['h2'] + le['h3']) * (1 + 1.2 * le['soft'])
        rl = min(rl, max(4.0 / ext, 14.5 / ext)) if rl * ext > 14.5 else max(rl, 4.2 / min(ext, 1.6))
        vl = le['vf'] * max(rr_loc - rl * 0.6, 0)
        dx = Uf - ul
        dy = Vb - vl
        ca, sa = math.cos(le['rot']), math.sin(le['rot'])
        xr = dx * ca + dy * sa
        yr = -dx * sa + dy * ca
        th = np.arctan2(yr, xr)
        rad = rl * (1 + le['h2'] * np.cos(2 * th + le['p2']) + le['h3'] * np.cos(3 * th + le['p3']))
        q = np.sqrt((xr / le['ax']) ** 2 + (yr / 1.0) ** 2) / rad
        q = q + le['qn'] * smooth_noise(rng, (nv, nu), max(1.0, rl * 0.25))
        m = 1 / (1 + np.exp(np.clip((q - 1) / le['soft'], -30, 30)))
        m = m.astype(np.float32) * (To > 0.5)
        sph = 2 * rl * np.sqrt(np.clip(1 - q ** 2, 0, 1))
        if le['type'] == 'lucent':
            Bl *= (1 - le['depth'] * m)
        else:
            Bl += le['depth'] * mu_c * 0.9 * (0.5 * sph + 0.5 * rl) * m * (1 + 0.25 * (tex - 1))
        if le['rim'] > 0:
            rim = np.exp(-((q - 1.0) / 0.13) ** 2) * (To > 0.5)
            Bl += le['rim'] * mu_c * 2.2 * rim
            m = np.maximum(m, rim)
        fmask = (m > 0.35).astype(np.float32)
    # warp into canvas ROI
    M = np.array([[eu[0], ev[0], b['p0'][0] - pad * eu[0] - vmax * ev[0] - x0],
                  [eu[1], ev[1], b['p0'][1] - pad * eu[1] - vmax * ev[1] - y0]], np.float32)
    src = np.dstack([Bl, fmask.astype(np.float32)]) if fmask is not None else Bl
    out = cv2.warpAffine(src, M, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if fmask is not None:
        A[y0:y1, x0:x1] += out[..., 0]
        FM[y0:y1, x0:x1] = np.maximum(FM[y0:y1, x0:x1], out[..., 1])
    else:
        A[y0:y1, x0:x1] += out


def render_capsules(caps, H, W, kr=1.0):
    T = np.zeros((H, W), np.float32)
    for p0, p1, r0, r1 in caps:
        r0 *= kr
        r1 *= kr
        rmax = max(r0, r1)
        x0 = int(max(0, min(p0[0], p1[0]) - rmax - 1))
        x1 = int(min(W, max(p0[0], p1[0]) + rmax + 2))
        y0 = int(max(0, min(p0[1], p1[1]) - rmax - 1))
        y1 = int(min(H, max(p0[1], p1[1]) + rmax + 2))
        if x1 - x0 < 1 or y1 - y0 < 1:
            continue
        X = np.arange(x0, x1, dtype=np.float32)[None, :]
        Y = np.arange(y0, y1, dtype=np.float32)[:, None]
        d = np.array(p1, float) - np.array(p0, float)
        dd = max(float(d @ d), 1e-6)
        t = np.clip(((X - p0[0]) * d[0] + (Y - p0[1]) * d[1]) / dd, 0, 1)
        dx = X - (p0[0] + t * d[0])
        dy = Y - (p0[1] + t * d[1])
        rr = r0 + (r1 - r0) * t
        th = 2 * np.sqrt(np.clip(rr ** 2 - dx ** 2 - dy ** 2, 0, None))
        np.maximum(T[y0:y1, x0:x1], th, out=T[y0:y1, x0:x1])
    return T


# ----------------------------------------------------------------------------
# metal
# ----------------------------------------------------------------------------
class Metal:
    def __init__(self, H, W):
        self.H, self.W = H, W
        self.M = np.zeros((H, W), np.float32)

    def poly(self, pts, val):
        pts = np.asarray(pts, float)
        x0 = int(max(0, math.floor(pts[:, 0].min()) - 2))
        y0 = int(max(0, math.floor(pts[:, 1].min()) - 2))
        x1 = int(min(self.W, math.ceil(pts[:, 0].max()) + 3))
        y1 = int(min(self.H, math.ceil(pts[:, 1].max()) + 3))
        if x1 - x0 < 1 or y1 - y0 < 1:
            return
        tmp = np.zeros((y1 - y0, x1 - x0), np.uint8)
        p = np.round((pts - [x0, y0]) * 16).astype(np.int32)
        cv2.fillPoly(tmp, [p], 255, cv2.LINE_AA, shift=4)
        self.M[y0:y1, x0:x1] += tmp.astype(np.float32) * (val / 255.0)

    def disk(self, c, r, val):
        a = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        self.poly(np.stack([c[0] + r * np.cos(a), c[1] + r * np.sin(a)], 1), val)

    def wire(self, pts, w, val=1.0):
        pts = np.asarray(pts, float)
        for i in range(len(pts) - 1):
            a, b_ = pts[i], pts[i + 1]
            d = b_ - a
            n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-6) * w / 2
            self.poly([a + n, b_ + n, b_ - n, a - n], val)
            if i > 0:
                self.disk(a, w / 2, val * 0.5)

    def screw(self, E, dv, length, sr, head=True, val=1.0):
        dv = np.asarray(dv, float) / (np.hypot(*dv) + 1e-9)
        n = np.array([-dv[1], dv[0]])
        E = np.asarray(E, float)
        pitch = max(1.8, 1.2 * sr)
        left, right = [], []
        if head:
            hl = 1.4 * sr
            for a, w in [(-hl, 1.5 * sr), (-0.5 * hl, 2.1 * sr), (0, 2.1 * sr), (0.01, 1.0 * sr)]:
                left.append((a, w))
                right.append((a, w))
        a, k = 0.6, 0
        while a < length - 2 * sr:
            left.append((a, sr * (1.4 if k % 2 else 0.95)))
            right.append((a + pitch / 4, sr * (0.95 if k % 2 else 1.4)))
            a += pitch / 2
            k += 1
        left.append((length, 0.35 * sr))
        right.append((length, 0.35 * sr))
        L = [E + a * dv + w * n for a, w in left]
        Rr = [E + a * dv - w * n for a, w in reversed(right)]
        self.poly(np.array(L + Rr), val)
        if head:
            self.poly([E - 1.2 * sr * dv + 0.5 * sr * n, E - 0.1 * sr * dv + 0.5 * sr * n,
                       E - 0.1 * sr * dv - 0.5 * sr * n, E - 1.2 * sr * dv - 0.5 * sr * n], -0.35 * val)


def render_hardware(b, hp, vp, MT, part, rng):
    L, eu, ev = geom(b)
    uu = np.linspace(0, L, 200)
    rprof = radius_profile(b, uu, L)
    riprof = inner_profile(b, uu, L, rprof)

    def rr(u):
        return float(np.interp(u, uu, rprof))

    def ri(u):
        return float(np.interp(u, uu, riprof))

    def P(u, v):
        return local_to_canvas(b, np.array([u]), np.array([v]))[0]

    t = hp['type']
    small = part in ('HAND', 'FINGER') or b['R'] < 8
    scale = b['R']
    if t == 'plate':
        Lp = float(np.clip(hp['lenf'] * L, 4 * scale, 0.85 * L))
        uc = float(np.clip(hp['uf'] * L, Lp / 2 + 2, L - Lp / 2 - 2)) if Lp + 4 < L else L / 2
        wp = float(np.clip(0.85 * scale, 4.5, 16))
        faceon = (vp['lat'] < 0.5) != hp['flipface']
        ns = hp['nscrew']
        us = np.linspace(uc - Lp / 2 + wp * 0.6, uc + Lp / 2 - wp * 0.6, ns)
        sr = float(np.clip(0.16 * scale, 1.2, 3.2))
        if faceon:
            vo = hp['voff'] * scale
            ug = np.linspace(uc - Lp / 2, uc + Lp / 2, 16)
            # rounded-end polygon
            left = [P(u, vo + wp / 2) for u in ug]
            right = [P(u, vo - wp / 2) for u in ug[::-1]]
            cap1 = [P(uc + Lp / 2 + wp / 2 * math.sin(a), vo + wp / 2 * math.cos(a))
                    for a in np.linspace(0, np.pi, 7)[1:-1]]
            cap0 = [P(uc - Lp / 2 - wp / 2 * math.sin(a), vo - wp / 2 * math.cos(a))
                    for a in np.linspace(0, np.pi, 7)[1:-1]]
            MT.poly(np.array(left + cap1 + right + cap0), 0.9)
            for i, u in enumerate(us):
                c = P(u, vo)
                MT.disk(c, wp * 0.42, -0.9)           # plate hole
                if not (hp['holes'] and i % 3 == 1):
                    MT.disk(c, wp * 0.25, 0.9)        # screw head, thin lucent gap around it
                    MT.disk(c, wp * 0.12, -0.8)       # hex recess
        else:
            s = hp['side']
            th = float(np.clip(0.28 * scale, 2.2, 4.5))
            ug = np.linspace(uc - Lp / 2, uc + Lp / 2, 24)
            inner = [P(u, s * (rr(u) + 0.5)) for u in ug]
            outer = [P(u, s * (rr(u) + 0.5 + th)) for u in ug[::-1]]
            MT.poly(np.array(inner + outer), 1.2)
            for u in us:
                E = P(u, s * (rr(u) + 0.5 + th))
                tip = P(u + hp['sang'] * rr(u), -s * (rr(u) + hp['over']))
                MT.screw(E, tip - E, float(np.hypot(*(tip - E))), sr, head=True)
    elif t == 'screw':
        u = hp['uf'] * L
        s = hp['side']
        sr = float(np.clip(0.2 * scale, 1.4, 3.6))
        E = P(u - hp['sang'] * rr(u), s * (rr(u) + 1.0))
        tip = P(u + hp['sang'] * rr(u), -s * rr(u) * hp['depthf'])
        MT.screw(E, tip - E, float(np.hypot(*(tip - E))), sr, head=hp['head'])
    elif t == 'kwire':
        w = float(np.clip(0.24 * scale, 1.4, 2.8)) if not small else float(np.clip(0.2 * scale, 1.3, 2.4))
        for k in range(hp['nwire']):
            ws = hp['wires'][k]
            if ws['long']:
                # longitudinal wire through the bone end
                a = P(-ws['out'] * scale, ws['v0'] * scale * 0.3)
                bpt = P(ws['ulen'] * L, ws['v1'] * scale * 0.3)
                pts = [bpt, a]
            else:
                u0 = ws['u0'] * L
                s = ws['side']
                u1 = u0 + ws['du'] * rr(u0)
                a = P(u0, s * (rr(u0) + ws['out'] * scale))
                bpt = P(u1, -s * (rr(u1) * 0.9 + 1.0))
                pts = [bpt, a]
            if ws['bend']:
                d = pts[1] - pts[0]
                d /= np.hypot(*d) + 1e-9
                n = np.array([-d[1], d[0]]) * ws['bsign']
                pts.append(pts[1] + (0.4 * d + n) * ws['blen'] * scale)
            MT.wire(pts, w, 1.1)
    elif t == 'nail':
        from_end = hp['end']
        wn = float(np.clip(1.1 * ri(L / 2), 4.0, 13.0))
        ug = np.linspace(-12, hp['lenf'] * L, 30)
        if from_end == 1:
            ug = L - ug
        left = [P(u, wn / 2) for u in ug]
        right = [P(u, -wn / 2) for u in ug[::-1]]
        tipc = P(ug[-1] + (wn * 0.6 if from_end == 0 else -wn * 0.6), 0)
        MT.poly(np.array(left + [tipc] + right), 1.3)
        MT.wire([P(u, 0) for u in ug[1:-1:4]], max(1.2, wn * 0.22), -0.35)
        sr = float(np.clip(0.18 * b['R'], 1.3, 3.0))
        for uf_ in hp['locks']:
            u = ug[0] + (ug[-1] - ug[0]) * uf_
            E = P(u, rr(u) + 4)
            tip = P(u, -(rr(u) + 3))
            MT.screw(E, tip - E, float(np.hypot(*(tip - E))), sr, head=True)


# ----------------------------------------------------------------------------
# study-level finding parameters
# ----------------------------------------------------------------------------
def pick_bone(bones, key, rng, extra=None):
    w = np.array([b[key] * (1.0 if extra is None else extra(b)) for b in bones], float)
    if w.sum() <= 0:
        return None
    return int(rng.choice(len(bones), p=w / w.sum()))


def make_fracture(b, rng):
    lo, hi = b['fu']
    # multi-scale jagged profile: coarse random walk + fine zig-zag (about 40 nodes across the bone)
    jt = np.linspace(-1.2, 1.2, 41)
    amp = rng.uniform(0.5, 1.6)
    coarse = np.cumsum(rng.normal(0, amp, 9))
    coarse = np.interp(jt, np.linspace(-1.2, 1.2, 9), coarse - coarse.mean())
    fine = rng.normal(0, rng.uniform(0.35, 0.9), jt.size) * np.where(np.arange(jt.size) % 2, 1, -0.5)
    jag = 0.7 * coarse + fine
    style = rng.choice(['complete', 'incomplete', 'buckle'], p=[0.5, 0.32, 0.18])
    fr = dict(uf=rng.uniform(lo, hi), phi=math.radians(rng.uniform(-50, 50)), jag_t=jt, jag=jag,
              w=rng.uniform(1.0, 2.4), wvar=rng.uniform(0, 0.3), wf=rng.uniform(0.2, 0.8),
              wph=rng.uniform(0, 6.3), depth=rng.uniform(0.4, 0.88), step=0.0, ang=0.0,
              buckle=0.0, bw=3.0, bside=1, ta=None, tside=1)
    if b['small']:
        style = 'complete' if style == 'buckle' else style
    if style == 'complete':
        if rng.random() < 0.5:
            fr['step'] = rng.choice([-1, 1]) * rng.uniform(0.8, 3.0)
        if rng.random() < 0.35:
            fr['ang'] = rng.choice([-1, 1]) * rng.uniform(0.02, 0.07)
    elif style == 'incomplete':
        fr['ta'] = rng.uniform(-0.2, 0.5)
        fr['tside'] = rng.choice([-1, 1])
    else:
        fr['buckle'] = rng.uniform(1.8, 4.0)
        fr['bw'] = rng.uniform(2.5, 6.0)
        fr['bside'] = rng.choice([-1, 1])
        fr['ta'] = rng.uniform(0.3, 0.7)
        fr['tside'] = fr['bside']
        fr['depth'] = rng.uniform(0.3, 0.6)
        fr['phi'] = math.radians(rng.uniform(-15, 15))
    fr['style'] = str(style)
    return fr


def make_lesion(b, rng):
    if b['small']:
        uf = rng.uniform(0.35, 0.65)
    else:
        # prefer metaphysis / epiphysis
        L = float(np.hypot(*(b['p1'] - b['p0'])))
        if rng.random() < 0.75:
            end = rng.integers(0, 2)
            Re = b['Re0'] if end == 0 else b['Re1']
            d = rng.uniform(0.7, 2.2) * Re / max(L, 1)
            uf = d if end == 0 else 1 - d
        else:
            uf = rng.uniform(0.25, 0.75)
        uf = float(np.clip(uf, 0.06, 0.94))
    typ = 'lucent' if rng.random() < 0.6 else 'sclerotic'
    return dict(uf=uf, vf=rng.uniform(-0.8, 0.8), rf=rng.uniform(0.45, 1.0), rot=rng.uniform(0, np.pi),
                ax=rng.uniform(1.0, 1.7), h2=rng.uniform(0, 0.15), h3=rng.uniform(0, 0.12),
                p2=rng.uniform(0, 6.3), p3=rng.uniform(0, 6.3), qn=rng.uniform(0.03, 0.15),
                soft=rng.uniform(0.08, 0.3), type=typ,
                depth=(rng.uniform(0.22, 0.55) if typ == 'lucent' else rng.uniform(0.3, 0.85)),
                rim=(rng.uniform(0.15, 0.45) if (typ == 'lucent' and rng.random() < 0.4) else 0.0))


def make_hardware(b, part, rng):
    types, w = HW_TYPES[part]
    L = float(np.hypot(*(b['p1'] - b['p0'])))
    ok = []
    for t_, w_ in zip(types, w, strict=False):
        if t_ == 'nail' and (b['small'] or L < 200):
            continue
        if t_ == 'plate' and (b['small'] or L < 40):
            continue
        ok.append((t_, w_))
    if not ok:
        ok = [('screw', 1.0)] if not b['small'] else [('kwire', 0.6), ('screw', 0.4)]
    tt = [o[0] for o in ok]
    ww = np.array([o[1] for o in ok])
    t = str(rng.choice(tt, p=ww / ww.sum()))
    lo, hi = b['fu']
    hp = dict(type=t, uf=rng.uniform(lo, hi), side=int(rng.choice([-1, 1])), sang=rng.uniform(-0.5, 0.5))
    if t == 'plate':
        hp.update(lenf=rng.uniform(0.25, 0.6), nscrew=int(rng.integers(3, 9)), flipface=rng.random() < 0.3,
                  voff=rng.uniform(-0.25, 0.25), holes=rng.random() < 0.4, over=rng.uniform(0.5, 4),
                  sang=rng.uniform(-0.15, 0.15))
    elif t == 'screw':
        hp.update(depthf=rng.uniform(0.3, 1.1), head=rng.random() < 0.75)
    elif t == 'kwire':
        n = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2]))
        wires = []
        for _ in range(n):
            wires.append(dict(long=(b['small'] is False and rng.random() < 0.25), out=rng.uniform(0.8, 4.0),
                              v0=rng.uniform(-1, 1), v1=rng.uniform(-1, 1), ulen=rng.uniform(0.3, 0.8),
                              u0=float(np.clip(hp['uf'] + rng.uniform(-0.12, 0.12), 0.05, 0.95)),
                              side=int(rng.choice([-1, 1])), du=rng.uniform(-3, 3) if not b['small'] else rng.uniform(-1.5, 1.5),
                              bend=rng.random() < 0.4, bsign=int(rng.choice([-1, 1])), blen=rng.uniform(0.8, 2.0)))
        hp.update(nwire=n, wires=wires)
    elif t == 'nail':
        hp.update(end=int(rng.integers(0, 2)), lenf=rng.uniform(0.6, 0.9),
                  locks=list(rng.choice([0.12, 0.2, 0.85, 0.93], size=int(rng.integers(1, 4)), replace=False)))
    return hp


# ----------------------------------------------------------------------------
# image synthesis
# ----------------------------------------------------------------------------
FONTS = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_PLAIN,
         cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX]


def bbox_of(mask, thr):
    ys, xs = np.nonzero(mask > thr)
    if xs.size == 0:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def overlaps(a, b, pad=4):
    return not (a[2] + pad < b[0] or b[2] + pad < a[0] or a[3] + pad < b[1] or b[3] + pad < a[1])


def view_params(part, vi, rng):
    if vi == 0:
        lat = 0.0
    elif vi == 1:
        lat = 1.0
    elif vi == 2:
        lat = 0.5
    else:
        lat = float(rng.choice([0.0, 0.5, 1.0]))
    lat = float(np.clip(lat + rng.uniform(-0.1, 0.1), 0, 1))
    flex = 0.0
    if part == 'ELBOW':
        flex = rng.uniform(-8, 12) if lat < 0.7 else rng.uniform(60, 110)
    elif part in ('HAND', 'FINGER'):
        flex = rng.uniform(0, 8) if lat < 0.7 else rng.uniform(5, 30)
    elif part == 'HUMERUS':
        flex = rng.uniform(0, 20) if lat < 0.7 else rng.uniform(30, 80)
    return dict(lat=lat, flex=flex, spread=rng.uniform(0.6, 1.5), abd=rng.uniform(-5, 35))


def transform_layout(bones, caps, extras, fit, H, W, st, vp, rng, tries):
    """part frame -> canvas."""
    base = st['base_rot']
    if W > H:
        base += 90 * st['land_sign']
    jit = rng.normal(0, 7) if rng.random() < 0.85 else rng.uniform(-35, 35)
    th = math.radians(base + jit)
    c, s_ = math.cos(th), math.sin(th)
    f = -1.0 if st['flip'] else 1.0
    Rm = np.array([[c, -s_], [s_, c]])

    def T0(p):
        p = np.asarray(p, float)
        q = p.copy()
        q[..., 0] *= f
        return q @ Rm.T

    fp = T0(np.array(fit, float))
    bw = fp[:, 0].max() - fp[:, 0].min()
    bh = fp[:, 1].max() - fp[:, 1].min()
    sc = min(W * 0.95 / max(bw, 1), H * 0.95 / max(bh, 1)) * rng.uniform(0.85, 1.1) * st['zoom']
    ctr = (fp.max(0) + fp.min(0)) / 2
    jx = (1 - 0.25 * tries) * rng.uniform(-0.06, 0.06) * W
    jy = (1 - 0.25 * tries) * rng.uniform(-0.06, 0.06) * H
    off = np.array([W / 2 + jx, H / 2 + jy]) - sc * ctr

    def T(p):
        return sc * T0(p) + off

    nb = []
    for b in bones:
        b2 = dict(b)
        b2['p0'] = T(b['p0'])
        b2['p1'] = T(b['p1'])
        for k in ('R', 'Re0', 'Re1'):
            b2[k] = b[k] * sc
        for k in ('w0', 'w1'):
            if b[k]:
                b2[k] = b[k] * sc
        b2['bend'] = b['bend'] * sc * f
        nb.append(b2)
    nc = [(T(p0), T(p1), r0 * sc, r1 * sc) for p0, p1, r0, r1 in caps]
    ne = {}
    if 'scap' in extras:
        ne['scap'] = T(extras['scap'])
        ne['spine'] = T(extras['spine'])
        ne['ribs'] = [T(r) for r in extras['ribs']]
        ne['lung'] = (T(extras['lung'][0]), np.array(extras['lung'][1]) * sc, base + jit)
    return nb, nc, ne, sc


def render_view(part, st, vi, H, W, show, rng, tries=0):
    vp = view_params(part, vi, rng)
    bones, caps, extras, fit = LAYOUT[part](np.random.default_rng(st['anat_seed']), vp)
    bones, caps, extras, sc = transform_layout(bones, caps, extras, fit, H, W, st, vp, rng, tries)
    pat = st['pat']
    for b in bones:
        b['dens'] = pat['dens'] * b.get('dens', 1.0)
        b['ct'] = b['ct'] * pat['cort']
        b['tx'] = pat['tx']
        if pat['young'] and not b['small']:
            b['physis'] = 1.3
    # attenuation layers
    big = [b['R'] for b in bones if b['fit'] and not b['small']]
    Rref = float(np.median(big)) if big else 10.0
    mu_c = pat['kc'] / Rref
    A = np.zeros((H, W), np.float32)
    FM = np.zeros((H, W), np.float32)
    # soft tissue
    rs = [max(c[2], c[3]) for c in caps]
    rref = float(np.median(rs))
    Ts = render_capsules(caps, H, W)
    Tm = render_capsules(caps, H, W, kr=pat['muscle'])
    Ts = np.minimum(Ts, 2.6 * rref)
    Tm = np.minimum(Tm, 2.6 * rref * pat['muscle'])
    mu_s = pat['ks'] / (2 * rref)
    As = mu_s * (0.8 * Ts + 0.45 * Tm)
    As = cv2.GaussianBlur(As, (0, 0), 1.5)
    if 'lung' in extras:
        c, ax, ang = extras['lung']
        lm = np.zeros((H, W), np.uint8)
        cv2.ellipse(lm, (int(c[0]), int(c[1])), (int(ax[0]), int(ax[1])), ang, 0, 360, 255, -1)
        lm = cv2.GaussianBlur(lm.astype(np.float32) / 255, (0, 0), 25)
        As *= 1 - 0.45 * lm
    A += As
    tex_s = float(np.clip(0.7 * sc, 0.7, 1.4)) * pat['texs']
    fkind = st['kind'] if show else None
    tb = st['bone']
    for i, b in enumerate(bones):
        fr = st['fr'] if (fkind == 'fracture' and i == tb) else None
        le = st['le'] if (fkind == 'lesion' and i == tb) else None
        render_bone(b, A, FM, mu_c, rng, tex_s, fr=fr, le=le)
    if 'scap' in extras:
        Af = np.zeros((H, W), np.float32)
        m = np.zeros((H, W), np.uint8)
        cv2.fillPoly(m, [np.round(extras['scap']).astype(np.int32)], 255, cv2.LINE_AA)
        dist = cv2.distanceTransform((m > 127).astype(np.uint8), cv2.DIST_L2, 3)
        Af += mu_c * Rref * (0.3 * np.clip(dist / (0.6 * Rref), 0, 1) + 0.6 * np.exp(-(dist / (0.15 * Rref + 1)) ** 2) * (m > 127))
        Af = cv2.GaussianBlur(Af, (0, 0), 2.5)
        for pts, wd in [(extras['spine'], 0.7)] + [(r, 0.75) for r in extras['ribs']]:
            l1 = np.zeros((H, W), np.uint8)
            l2 = np.zeros((H, W), np.uint8)
            w1 = max(3, int(wd * Rref))
            cv2.polylines(l1, [np.round(pts).astype(np.int32)], False, 255, w1, cv2.LINE_AA)
            cv2.polylines(l2, [np.round(pts).astype(np.int32)], False, 255, max(1, int(w1 * 0.6)), cv2.LINE_AA)
            Af += mu_c * Rref * (0.28 * l1 / 255.0 - 0.16 * l2 / 255.0)
        Af = cv2.GaussianBlur(Af, (0, 0), 1.2)
        Af *= 0.8 + 0.4 * smooth_noise(rng, (H, W), 6) * 0.5
        A += Af * (1 - 0.3 * vp['lat'])
    MT = Metal(H, W)
    hwbox = None
    if fkind == 'hardware':
        render_hardware(bones[tb], st['hp'], vp, MT, part, rng)
        MT.M = np.clip(MT.M, 0, None)
        hwbox = MT.M.copy()
    # distractors
    if st['ring'] and part in ('HAND', 'FINGER'):
        cand = [b for b in bones if b['name'] == 'phalanx' and b['fit']]
        if cand:
            b = cand[min(len(cand) - 1, st['ring_i'] % len(cand))]
            L, eu, ev = geom(b)
            ctr = b['p0'] + eu * L * 0.55
            wr = 2.05 * b['R']
            th = max(2.0, 0.45 * b['R'])
            th = max(1.2, 0.22 * b['R'])
            MT.poly([ctr + ev * wr + eu * th, ctr - ev * wr + eu * th, ctr - ev * wr - eu * th,
                     ctr + ev * wr - eu * th], 0.3)
            MT.disk(ctr + ev * wr, th * 1.1, 0.45)
            MT.disk(ctr - ev * wr, th * 1.1, 0.45)
    if st['cast']:
        cc = [(p0, p1, r0 * 1.35 + 6, r1 * 1.35 + 6) for p0, p1, r0, r1 in caps[:2]]
        To = render_capsules(cc, H, W)
        Ti = render_capsules([(p0, p1, r0 - 5, r1 - 5) for p0, p1, r0, r1 in cc], H, W)
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        mesh = 0.5 + 0.5 * np.sin((xx + yy) * 0.9) * np.sin((xx - yy) * 0.9)
        A += st['cast'] * mu_s * (To - Ti) * (0.85 + 0.3 * mesh)
    # lead marker placed before imaging
    mark_boxes = []
    np.zeros((H, W), np.float32)
    # gather preliminary finding mask
    fsrc = hwbox if fkind == 'hardware' else (FM if fkind else None)
    if fsrc is not None:
        bbox_of(fsrc, 0.2 if fkind == 'hardware' else 0.3)
    # imaging -----------------------------------------------------------
    im = st['img']
    Atot = A + MT.M * im['mu_m']
    sig = im['det_blur']
    Atot = cv2.GaussianBlur(Atot, (0, 0), sig)
    yy = (np.arange(H, dtype=np.float32)[:, None] / H - 0.5)
    xx = (np.arange(W, dtype=np.float32)[None, :] / W - 0.5)
    Atot *= 1 + im['heel'] * (xx * math.cos(im['heel_a']) + yy * math.sin(im['heel_a']))
    n = rng.standard_normal((H, W), dtype=np.float32)
    if im['corr']:
        n = cv2.GaussianBlur(n, (0, 0), 0.7) * 2.0
    An = Atot + im['qn'] * np.exp(0.5 * np.minimum(Atot, 3.0)) * n
    sub = Atot[::3, ::3]
    msk = (MT.M[::3, ::3] < 0.05) & (sub > 0.1)
    hi = float(np.percentile(sub[msk], 99.6)) if msk.sum() > 50 else float(sub.max() + 1e-3)
    lo = -im['black']
    v = (An - lo) / (hi * im['wscale'] - lo)
    v = np.clip(v, 0, None) ** im['gamma']
    knee = 0.88
    v = np.where(v < knee, v, knee + (1 - knee) * np.tanh((v - knee) / (1.8 * (1 - knee))))
    if im['usm'] > 0:
        v = v + im['usm'] * (v - cv2.GaussianBlur(v, (0, 0), im['usm_s']))
    # collimation
    field = np.ones((H, W), np.float32)
    if im['coll'] != 'none':
        m = np.zeros((H, W), np.uint8)
        ml, mr, mt, mb = im['margins']
        ca = math.radians(im['coll_rot'])
        cx, cy = W / 2, H / 2
        pts = np.array([[ml, mt], [W - mr, mt], [W - mr, H - mb], [ml, H - mb]], float)
        R2 = np.array([[math.cos(ca), -math.sin(ca)], [math.sin(ca), math.cos(ca)]])
        pts = (pts - [cx, cy]) @ R2.T + [cx, cy]
        cv2.fillPoly(m, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
        field = m.astype(np.float32) / 255
        if im['coll_blur'] > 0:
            field = cv2.GaussianBlur(field, (0, 0), im['coll_blur'])
        outside = im['coll_val'] + 0.03 * smooth_noise(rng, (H, W), 20) + 0.01 * n
        if im['coll'] == 'bright':
            outside = outside + 0.12 * (1 - v) * 0.3
        v = v * field + outside * (1 - field)
    # vignette / film photo look
    if im['vig'] > 0:
        rr2 = (xx * 2) ** 2 + (yy * 2) ** 2
        v = v * (1 - im['vig'] * rr2)
    v = v + im['grain'] * rng.standard_normal((H, W), dtype=np.float32)
    img = np.clip(im['b0'] + v * (im['w0'] - im['b0']), 0, 255)
    # boxes ---------------------------------------------------------------
    box = None
    if fkind:
        full = float((fsrc > 0.25).sum())
        vis_mask = (fsrc > 0.25) & (field > 0.5)
        vis = float(vis_mask.sum())
        if full > 0 and vis >= max(12.0, 0.25 * full):
            if fkind == 'hardware':
                box = bbox_of(fsrc * (field > 0.5), 0.2)
            else:
                box = bbox_of(fsrc * (field > 0.5), 0.3)
            if box is not None:
                p = 1 if fkind == 'fracture' else 1
                box = [max(0, box[0] - p), max(0, box[1] - p), min(W, box[2] + p), min(H, box[3] + p)]
    # annotations --------------------------------------------------------
    if st['marker'] and rng.random() < 0.85:
        txt = st['lat_letter']
        fs = rng.uniform(0.9, 2.0)
        font = FONTS[int(rng.integers(0, len(FONTS)))]
        thick = int(rng.integers(2, 5))
        (tw, th_), bl = cv2.getTextSize(txt, font, fs, thick)
        # candidate positions near corners inside the field
        ml, mr, mt, mb = im['margins'] if im['coll'] != 'none' else (0, 0, 0, 0)
        cands = [(ml + 12, mt + 14 + th_), (W - mr - 14 - tw, mt + 14 + th_),
                 (ml + 12, H - mb - 14), (W - mr - 14 - tw, H - mb - 14)]
        order = rng.permutation(4)
        for oi in order:
            x, y = cands[oi]
            x += int(rng.integers(0, 20))
            y += int(rng.integers(-6, 6))
            mb_ = [x - 6, y - th_ - 6, x + tw + 6, y + bl + 4]
            if box is not None and overlaps(mb_, box, 6):
                continue
            if mb_[0] < 0 or mb_[1] < 0 or mb_[2] > W or mb_[3] > H:
                continue
            lay = np.zeros((H, W), np.uint8)
            cv2.putText(lay, txt, (x, y), font, fs, 255, thick, cv2.LINE_AA)
            val = rng.uniform(215, 255)
            layf = lay.astype(np.float32) / 255
            if st['marker'] == 'lead':
                layf = cv2.GaussianBlur(layf, (0, 0), 0.7)
                bgv = img[mb_[1]:mb_[3], mb_[0]:mb_[2]].mean() if rng.random() < 0.5 else None
                if bgv is not None:
                    img[mb_[1]:mb_[3], mb_[0]:mb_[2]] = np.clip(img[mb_[1]:mb_[3], mb_[0]:mb_[2]] + 25, 0, 255)
            img = img * (1 - layf) + val * layf
            mark_boxes.append(mb_)
            break
    if st['label'] and rng.random() < 0.8:
        txt = st['label']
        fs = rng.uniform(0.4, 0.8)
        font = FONTS[int(rng.integers(0, 2))]
        (tw, th_), bl = cv2.getTextSize(txt, font, fs, 1)
        for _ in range(4):
            x = int(rng.integers(4, max(5, W - tw - 4)))
            y = int(rng.choice([th_ + 6, H - 6]))
            mb_ = [x - 2, y - th_ - 2, x + tw + 2, y + bl + 2]
            if box is not None and overlaps(mb_, box, 4):
                continue
            if any(overlaps(mb_, o, 2) for o in mark_boxes):
                continue
            lay = np.zeros((H, W), np.uint8)
            cv2.putText(lay, txt, (x, y), font, fs, 255, 1, cv2.LINE_AA)
            layf = lay.astype(np.float32) / 255
            img = img * (1 - layf) + rng.uniform(200, 255) * layf
            break
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), box


def image_style(rng):
    coll = str(rng.choice(['none', 'bright', 'dark', 'gray'], p=[0.25, 0.35, 0.32, 0.08]))
    cv = {'none': 0, 'bright': rng.uniform(0.8, 1.0), 'dark': rng.uniform(0.0, 0.06),
          'gray': rng.uniform(0.3, 0.6)}[coll]
    return dict(mu_m=rng.uniform(3, 6), det_blur=rng.uniform(0.45, 1.1), heel=rng.uniform(-0.12, 0.12),
                heel_a=rng.uniform(0, 6.3), corr=rng.random() < 0.5, qn=rng.uniform(0.006, 0.022),
                black=rng.uniform(0.02, 0.14), wscale=rng.uniform(0.92, 1.15), gamma=rng.uniform(0.65, 1.3),
                usm=(rng.uniform(0.2, 1.0) if rng.random() < 0.55 else 0.0), usm_s=rng.uniform(2.0, 8.0),
                coll=coll, coll_val=cv, coll_rot=(rng.uniform(-5, 5) if rng.random() < 0.5 else 0.0),
                margins=[int(rng.integers(0, 60)) if rng.random() < 0.8 else 0 for _ in range(4)],
                coll_blur=rng.uniform(0, 1.5), vig=(rng.uniform(0.05, 0.25) if rng.random() < 0.25 else 0.0),
                grain=rng.uniform(0.002, 0.012), b0=rng.uniform(0, 18), w0=rng.uniform(225, 255))


LABELS = ['PA', 'LAT', 'OBL', 'AP', 'ER', 'IR', 'FLEX', 'PORTABLE', 'WB', '1/2', '2/3',
          'POST CAST', 'SUPINE', 'AXIAL', 'Y VIEW', 'ROUTINE']


def make_study(part, abnormal, nviews, pat, rng):
    st = dict(anat_seed=int(rng.integers(1 << 31)), pat=pat, flip=pat['side'] == 'L',
              lat_letter=pat['side'], base_rot=0.0, land_sign=int(rng.choice([-1, 1])),
              zoom=rng.uniform(0.92, 1.08))
    if part in ('FOREARM', 'HUMERUS', 'ELBOW') and rng.random() < 0.3:
        st['base_rot'] = 180.0
    if part == 'SHOULDER' and rng.random() < 0.1:
        st['base_rot'] = 180.0
    st['kind'] = str(rng.choice(KINDS, p=KIND_W)) if abnormal else None
    st['bone'] = -1
    bones0, _, _, _ = LAYOUT[part](np.random.default_rng(st['anat_seed']), view_params(part, 0, rng))

    def set_finding():
        def fitw(b):
            return 1.0 if b['fit'] else 0.1
        if st['kind'] == 'fracture':
            st['bone'] = pick_bone(bones0, 'wf', rng, extra=fitw)
            st['fr'] = make_fracture(bones0[st['bone']], rng)
        elif st['kind'] == 'lesion':
            st['bone'] = pick_bone(bones0, 'wl', rng, extra=lambda b: float(b['Re0'] > 5.0) * fitw(b))
            st['le'] = make_lesion(bones0[st['bone']], rng)
        elif st['kind'] == 'hardware':
            st['bone'] = pick_bone(bones0, 'wh', rng, extra=lambda b: (1.0 + 2.0 * (not b['small'])) * fitw(b))
            st['hp'] = make_hardware(bones0[st['bone']], part, rng)
    set_finding()
    st['ring'] = rng.random() < 0.025
    st['ring_i'] = int(rng.integers(0, 16))
    st['cast'] = rng.uniform(0.3, 0.8) if rng.random() < 0.04 else 0.0
    st['marker'] = str(rng.choice(['lead', 'burn', ''], p=[0.35, 0.3, 0.35]))
    st['label'] = str(rng.choice(LABELS)) if rng.random() < 0.25 else ''
    shows = [True] + [bool(rng.random() < 0.75) for _ in range(nviews - 1)]
    out = []
    for vi in range(nviews):
        land_p = {'SHOULDER': 0.5, 'ELBOW': 0.3}.get(part, 0.12)
        if rng.random() < land_p:
            W, H = 512, int(rng.integers(350, 513))
        else:
            H, W = 512, int(rng.integers(350, 513))
        st['img'] = image_style(rng)
        show = abnormal and shows[vi]
        img, box = None, None
        for tries in range(8):
            img, box = render_view(part, st, vi, H, W, show, rng, min(tries, 3))
            if not show or box is not None or vi > 0:
                break
            if tries % 2 == 1:
                set_finding()      # finding landed outside the exposed field: re-place it
        out.append((img, box))
    return out, st['kind']


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('out')
    ap.add_argument('--patients', type=int, default=300)
    ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    t0 = time.time()
    rng = np.random.default_rng(a.seed)
    root = os.path.join(a.out, 'MURA-v1.1')
    N = a.patients
    ids = np.sort(rng.choice(np.arange(1, 100000), size=N, replace=False))
    nval = int(round(0.2 * N))
    val_set = set(rng.choice(N, size=nval, replace=False).tolist())
    paths = {'train': [], 'valid': []}
    studies = {'train': [], 'valid': []}
    boxes = []
    nimg = 0
    for pi in range(N):
        split = 'valid' if pi in val_set else 'train'
        pid = 'patient%05d' % ids[pi]
        pat = dict(side=str(rng.choice(['L', 'R'])), dens=rng.uniform(0.8, 1.15), cort=rng.uniform(0.75, 1.2),
                   kc=rng.uniform(0.95, 1.25), ks=rng.uniform(0.7, 1.2), muscle=rng.uniform(0.7, 0.9),
                   tx=rng.uniform(1.0, 2.2), texs=rng.uniform(0.85, 1.25), young=rng.random() < 0.1)
        if rng.random() < 0.15:
            pat['dens'] *= 0.75
            pat['cort'] *= 0.7
        nst = 1 if rng.random() < 0.65 else 2
        part = str(rng.choice(PARTS, p=PART_W / PART_W.sum()))
        counts = {}
        for si in range(nst):
            if si > 0 and rng.random() < 0.4:
                part = str(rng.choice(PARTS, p=PART_W / PART_W.sum()))
            counts[part] = counts.get(part, 0) + 1
            k = counts[part]
            abnormal = bool(rng.random() < 0.4)
            nv = int(rng.choice([1, 2, 3, 4], p=[0.15, 0.35, 0.35, 0.15]))
            sdir = 'MURA-v1.1/%s/XR_%s/%s/study%d_%s/' % (split, part, pid, k,
                                                         'positive' if abnormal else 'negative')
            os.makedirs(os.path.join(a.out, sdir), exist_ok=True)
            views, kind = make_study(part, abnormal, nv, pat, np.random.default_rng(int(rng.integers(1 << 62))))
            for j, (img, box) in enumerate(views):
                rel = sdir + 'image%d.png' % (j + 1)
                cv2.imwrite(os.path.join(a.out, rel), img)
                paths[split].append(rel)
                nimg += 1
                if box is not None:
                    boxes.append((rel, box, kind))
            studies[split].append((sdir, int(abnormal)))
        if (pi + 1) % 50 == 0:
            print('%d/%d patients, %d images, %.1fs' % (pi + 1, N, nimg, time.time() - t0), flush=True)
    for split in ('train', 'valid'):
        with open(os.path.join(root, f'{split}_image_paths.csv'), 'w') as f:
            for p in paths[split]:
                f.write(p + '\n')
        with open(os.path.join(root, f'{split}_labeled_studies.csv'), 'w') as f:
            for s, l in studies[split]:
                f.write('%s,%d\n' % (s, l))
    with open(os.path.join(a.out, 'boxes.csv'), 'w') as f:
        f.write('path,x0,y0,x1,y1,kind\n')
        for rel, b, kd in boxes:
            f.write('%s,%d,%d,%d,%d,%s\n' % (rel, b[0], b[1], b[2], b[3], kd))
    print('done: %d images, %d boxes, %.1fs' % (nimg, len(boxes), time.time() - t0))


if __name__ == '__main__':
    main()
