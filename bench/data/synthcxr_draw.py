"""Vectorised drawing of synthetic chest radiographs (the pixels of the ``synthcxr`` dataset).

Everything is drawn in *anatomy coordinates* ``(u, v)`` in [0, 1]: ``u`` grows to the image's
right, ``v`` downwards. The pixel grid is rotated/shifted into that frame, so every mask is
already in pixel space and finding boxes are read off the masks directly.

Radiological convention: the patient's right lung is on the image's left. Inside one lung we
use ``q`` = distance from the midline towards that lung's lateral chest wall, so one formula
draws either side.

The image is composed as an attenuation map ``D`` (soft tissue, bones and opacities add, air in
the lungs subtracts), then exposed (``1 - exp(-k D)``), blurred and given film noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

SIDES = ("right", "left")  # patient sides
ZONES = ("upper", "middle", "lower")
_SIGN = {"right": -1.0, "left": 1.0}  # image direction of each patient side from the midline

SEVERITY_SCALE = {  # severity word -> 0 (least) .. 2 (most)
    "small": 0,
    "mild": 0,
    "moderate": 1,
    "large": 2,
    "severe": 2,
}


@dataclass(frozen=True)
class FindingSpec:
    """One finding to draw. ``side`` is the patient's side ("right", "left", "both")."""

    name: str
    side: str | None = None
    zone: str | None = None
    severity: str = ""
    hedged: bool = False  # drawn subtle (smaller, fainter); the report hedges it
    kind: str = ""  # drawing variant, e.g. atelectasis "plate" | "wedge"


@dataclass(frozen=True)
class Anatomy:
    """Per-image anatomy and exposure, drawn by :func:`sample_anatomy`."""

    rotation: float  # radians
    shift: tuple[float, float]  # (du, dv) of the patient in the image
    body_hw: float  # half width of the trunk
    lung_w: tuple[float, float]  # lateral extent of (right, left) lung from the midline
    lung_top: tuple[float, float]  # apex height of (right, left) lung
    dome: tuple[float, float]  # diaphragm dome height under (right, left) lung
    ctr: float  # cardiothoracic ratio
    heart_aspect: float  # heart height / width
    heart_tilt: float  # radians
    rib_spacing: float
    rib_offset: float
    gastric_bubble: bool
    exposure: float  # k in 1 - exp(-k D)
    gamma: float
    noise: float
    blur: float  # in pixels at 224 px


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    right_dome = rng.uniform(0.615, 0.685)
    return Anatomy(
        rotation=float(np.deg2rad(rng.normal(0.0, 1.5))),
        shift=(float(rng.normal(0.0, 0.012)), float(rng.normal(0.0, 0.012))),
        body_hw=float(rng.uniform(0.42, 0.48)),
        lung_w=(float(rng.uniform(0.30, 0.35)), float(rng.uniform(0.30, 0.35))),
        lung_top=(float(rng.uniform(0.10, 0.14)), float(rng.uniform(0.10, 0.14))),
        dome=(float(right_dome), float(right_dome + rng.uniform(0.01, 0.035))),
        ctr=float(rng.uniform(0.38, 0.47)),
        heart_aspect=float(rng.uniform(0.72, 0.86)),
        heart_tilt=float(np.deg2rad(rng.uniform(8.0, 22.0))),
        rib_spacing=float(rng.uniform(0.060, 0.072)),
        rib_offset=float(rng.uniform(0.0, 1.0)),
        gastric_bubble=bool(rng.random() < 0.6),
        exposure=float(rng.uniform(1.0, 1.4)),
        gamma=float(rng.uniform(0.9, 1.15)),
        noise=float(rng.uniform(0.012, 0.03)),
        blur=float(rng.uniform(0.5, 1.0)),
    )


# ----------------------------------------------------------------------------- helpers


def _sig(x: np.ndarray, eps: float) -> np.ndarray:
    """A soft step: 0 for x << 0, 1 for x >> 0, width ``eps``."""
    return 0.5 + 0.5 * np.tanh(x / (2.0 * eps))


def _seg_dist(u: np.ndarray, v: np.ndarray, p0: tuple[float, float], p1: tuple[float, float]) -> np.ndarray:
    """Distance from every point to the segment p0-p1."""
    ax, ay = p0
    bx, by = p1
    dx, dy = bx - ax, by - ay
    t = np.clip(((u - ax) * dx + (v - ay) * dy) / (dx * dx + dy * dy + 1e-12), 0.0, 1.0)
    ex, ey = u - ax - t * dx, v - ay - t * dy
    return np.sqrt(ex * ex + ey * ey)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight (x, y, w, h) pixel box of a boolean mask, None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


@dataclass
class _Lung:
    """Analytic description of one lung and its per-pixel fields."""

    side: str
    q: np.ndarray  # distance from midline towards this lung's chest wall
    qc: float  # superellipse centre and semi-axes
    aq: float
    vc: float
    av: float
    top: float
    dome: float
    med: float
    lat: float
    env: np.ndarray  # soft mask of the lung envelope (above the diaphragm)
    diaph_v: np.ndarray  # diaphragm height at each pixel's q

    def level(self, q: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Superellipse level: < 1 inside the lung outline."""
        return np.abs((q - self.qc) / self.aq) ** 2.4 + np.abs((v - self.vc) / self.av) ** 2.4

    def zone_range(self, zone: str) -> tuple[float, float]:
        k = ZONES.index(zone)
        h = (self.dome - self.top) / 3.0
        return self.top + k * h, self.top + (k + 1) * h

    def cp_angle(self) -> float:
        """Height of the lateral costophrenic angle."""
        return self.dome + 0.075 * ((self.lat - self._qd()) / self.aq) ** 2

    def _qd(self) -> float:
        return self.qc - 0.1 * self.aq


def _make_lung(side: str, u: np.ndarray, v: np.ndarray, lat: float, top: float, dome: float) -> _Lung:
    med = 0.035
    aq = (lat - med) / 2.0
    qc = med + aq
    av = 0.45
    vc = top + av
    q = _SIGN[side] * (u - 0.5)
    lung = _Lung(side, q, qc, aq, vc, av, top, dome, med, lat, env=q, diaph_v=q)
    diaph_v = dome + 0.075 * ((q - lung._qd()) / aq) ** 2
    inside = _sig(1.0 - lung.level(q, v), 0.05)
    env = inside * _sig(diaph_v - v, 0.004) * _sig(q - med + 0.01, 0.004)
    lung.env = env.astype(np.float32)
    lung.diaph_v = diaph_v.astype(np.float32)
    return lung


# ----------------------------------------------------------------------------- renderer


class _Canvas:
    """The pixel grid in anatomy coordinates, the generator and the boxes found so far."""

    def __init__(self, anatomy: Anatomy, size: int, rng: np.random.Generator):
        self.a = anatomy
        self.size = size
        self.rng = rng
        self.px = 1.0 / size  # one pixel in normalised units
        g = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
        gx, gy = np.meshgrid(g, g)
        c, s = math.cos(anatomy.rotation), math.sin(anatomy.rotation)
        self.u = (c * gx + s * gy + 0.5 - anatomy.shift[0]).astype(np.float32)
        self.v = (-s * gx + c * gy + 0.5 - anatomy.shift[1]).astype(np.float32)
        self.boxes: dict[str, list[tuple[int, int, int, int]]] = {}
        # heart: a tilted ellipse, mostly on the image's right (the patient's left)
        # sized so that its horizontal extent is ctr x the thoracic width (the lungs' lateral edges)
        hw = anatomy.ctr * (anatomy.lung_w[0] + anatomy.lung_w[1])
        c, s, k = math.cos(anatomy.heart_tilt), math.sin(anatomy.heart_tilt), anatomy.heart_aspect
        ha = hw / 2.0 / math.sqrt(c * c + k * k * s * s)
        self.heart_c = (0.5 + 0.2 * hw, anatomy.dome[1] - 0.45 * ha * k)
        self.heart_ax = (ha, ha * k)

    def heart_level(self, u: np.ndarray | float, v: np.ndarray | float) -> np.ndarray | float:
        """< 1 inside the heart ellipse."""
        ct, st = math.cos(self.a.heart_tilt), math.sin(self.a.heart_tilt)
        du, dv = u - self.heart_c[0], v - self.heart_c[1]
        return ((ct * du + st * dv) / self.heart_ax[0]) ** 2 + ((-st * du + ct * dv) / self.heart_ax[1]) ** 2

    def visible_lung(self, lung: _Lung, q: float, v: float, margin: float = 0.0) -> bool:
        """Whether point (q, v) of ``lung`` lies in aerated lung, clear of heart and mediastinum."""
        u = 0.5 + _SIGN[lung.side] * q
        return bool(
            lung.level(q, v) < 0.6
            and q > lung.med + 0.03 + margin
            and v < lung.dome - margin
            and self.heart_level(u, v) > (1.0 + margin / self.heart_ax[0]) ** 2
        )

    def add_box(self, name: str, mask: np.ndarray) -> None:
        box = mask_box(mask)
        if box is not None:
            self.boxes.setdefault(name, []).append(box)


def _apply_to_anatomy(a: Anatomy, by_name: dict[str, FindingSpec], rng: np.random.Generator) -> Anatomy:
    """Findings that change the anatomy itself: a large heart, volume loss."""
    if "Cardiomegaly" in by_name:
        f = by_name["Cardiomegaly"]
        lo, hi = (0.505, 0.53) if f.hedged else ((0.52, 0.55), (0.55, 0.59), (0.59, 0.64))[_level(f)]
        a = replace(a, ctr=float(rng.uniform(lo, hi)), heart_aspect=a.heart_aspect * 0.92)
    if "Atelectasis" in by_name:  # the hemidiaphragm rises
        f = by_name["Atelectasis"]
        lift = (0.012, 0.022, 0.035)[_level(f)] * (0.5 if f.hedged else 1.0)
        dome = tuple(d - lift if f.side in (side, "both") else d for d, side in zip(a.dome, SIDES))
        a = replace(a, dome=(dome[0], dome[1]))
    return a


def render(
    anatomy: Anatomy, findings: list[FindingSpec], size: int, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, list[tuple[int, int, int, int]]], dict[str, float]]:
    """Draw one radiograph.

    Returns the uint8 image [size, size], the boxes of each drawn finding (pixels, one box per
    lung for bilateral findings) and measured facts (cardiothoracic ratio).
    """
    by_name = {f.name: f for f in findings}
    a = _apply_to_anatomy(anatomy, by_name, rng)
    cv = _Canvas(a, size, rng)
    u, v = cv.u, cv.v
    lungs = {side: _make_lung(side, u, v, a.lung_w[k], a.lung_top[k], a.dome[k]) for k, side in enumerate(SIDES)}

    # trunk: soft tissue thickness of a rounded body, narrower at the neck
    neck = 0.13
    t = np.clip((v + 0.02) / 0.2, 0.0, 1.0)
    r = np.abs(u - 0.5) / (neck + (a.body_hw - neck) * (t * t * (3 - 2 * t)))
    thick = np.clip(1.0 - r * r, 0.0, 1.0) ** 0.35
    D = 0.74 * thick * _sig(1.0 - r, 0.01)

    # heart, mediastinum (with the aortic knob) and the diaphragm line
    heart = _sig(1.0 - cv.heart_level(u, v), 0.03)
    knob = _sig(0.03 - np.sqrt((u - 0.545) ** 2 + (v - (a.lung_top[1] + 0.2)) ** 2), 0.004)
    medi = np.maximum(_sig(0.045 - np.abs(u - 0.503), 0.004), knob)
    above = np.minimum(_sig(lungs["right"].diaph_v - v, 0.004), _sig(lungs["left"].diaph_v - v, 0.004))
    above = np.where(np.abs(u - 0.5) < 0.06, _sig(min(a.dome) + 0.05 - v, 0.004), above)
    notlung = np.maximum(heart, medi)

    # lungs: air removes attenuation; vascular markings radiate from the hila
    markings = 0.11 * (0.6 if "Edema" in by_name else 1.0)  # edema blurs the vessels
    eff: dict[str, np.ndarray] = {}
    ptx: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
    for side, lung in lungs.items():
        eff[side] = lung.env * (1.0 - notlung)
        ptx[side] = _pneumothorax(cv, lung, by_name.get("Pneumothorax"))
        gap = 0.0 if ptx[side] is None else ptx[side][0]
        D = D - 0.52 * eff[side] * (1.0 + 0.45 * gap) + markings * _vessels(cv, lung) * eff[side] * (1.0 - gap)
    D = D + 0.06 * heart * above * (1.0 - 0.5 * medi)
    D = D + 0.06 * (1.0 - above) * thick  # abdomen
    if a.gastric_bubble:
        bubble = _sig(1.0 - ((u - 0.66) / 0.05) ** 2 - ((v - a.dome[1] - 0.06) / 0.03) ** 2, 0.1)
        D = D - 0.25 * bubble * (v > a.dome[1] + 0.035)
    D = D + _bones(cv, lungs, heart)

    for f in findings:
        draw = _DRAW.get(f.name)
        if draw is not None:
            D = draw(cv, f, lungs, eff, D)
    heart_box = mask_box((heart > 0.5) & (above > 0.5))
    chest_box = mask_box((lungs["right"].env > 0.5) | (lungs["left"].env > 0.5))
    if "Cardiomegaly" in by_name:
        cv.add_box("Cardiomegaly", (heart > 0.5) & (above > 0.5))
    for side in SIDES:
        if ptx[side] is not None:
            gap, line = ptx[side]
            cv.add_box("Pneumothorax", gap * lungs[side].env > 0.5)
            D = D + line

    # exposure, blur, film noise
    img = (1.0 - np.exp(-a.exposure * np.clip(D, 0.0, None))) / (1.0 - math.exp(-a.exposure * 1.3))
    img = np.clip(img, 0.0, 1.0) ** a.gamma
    img = ndimage.gaussian_filter(img, a.blur * size / 224.0, mode="nearest")
    img = img + a.noise * rng.standard_normal(img.shape, dtype=np.float32)
    img = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    measured = heart_box[2] / chest_box[2] if heart_box and chest_box else float("nan")
    return img, cv.boxes, {"ctr": float(a.ctr), "ctr_measured": float(measured)}


def _vessels(cv: _Canvas, lung: _Lung) -> np.ndarray:
    """Branching-looking lines radiating from the hilum, fading towards the periphery."""
    rng = cv.rng
    hq, hv = 0.075, 0.43 + 0.5 * (lung.dome - 0.65)
    dq, dv = lung.q - hq, cv.v - hv
    ang = np.arctan2(dv, dq)
    rad = np.sqrt(dq * dq + dv * dv)
    f1 = rng.uniform(13.0, 18.0)
    ph = [float(x) for x in rng.uniform(0, 2 * math.pi, size=4)]
    w1 = np.cos(f1 * ang + 1.6 * np.sin(11.0 * rad + ph[0]) + ph[1])
    w2 = np.cos(1.7 * f1 * ang + 2.2 * np.sin(17.0 * rad + ph[2]) + ph[3])
    lines = np.exp(5.0 * (w1 - 1.0)) + 0.6 * np.exp(7.0 * (w2 - 1.0))
    return lines * np.exp(-rad / 0.16) + 0.5 * np.exp(-((rad / 0.05) ** 2))


def _bones(cv: _Canvas, lungs: dict[str, _Lung], heart: np.ndarray) -> np.ndarray:
    """Spine, posterior and anterior ribs, clavicles."""
    a, u, v = cv.a, cv.u, cv.v
    spine = _sig(0.028 - np.abs(u - 0.5), 0.004) * (0.8 + 0.2 * np.cos(2 * np.pi * v / 0.045))
    out = 0.10 * spine * (1.0 - 0.4 * heart)
    for k, side in enumerate(SIDES):
        lung = lungs[side]
        q = lung.q
        chest = _sig(lung.lat + 0.02 - q, 0.006) * _sig(q - 0.02, 0.006) * _sig(a.dome[k] + 0.06 - v, 0.01)
        phase = (v - a.lung_top[k] + 0.02 - 0.9 * q * q + 0.08 * q) / a.rib_spacing + a.rib_offset
        rib = np.clip((np.cos(2 * np.pi * phase) - 0.45) / 0.55, 0.0, 1.0)
        phase2 = (v - a.lung_top[k] - 0.05 + 0.35 * q) / (1.15 * a.rib_spacing) + a.rib_offset
        ant = np.clip((np.cos(2 * np.pi * phase2) - 0.6) / 0.4, 0.0, 1.0)
        out = out + (0.05 * rib + 0.015 * ant) * chest
        s = _SIGN[side]
        clav = _seg_dist(u, v, (0.5 + s * 0.035, 0.165), (0.5 + s * 0.30, 0.085 + 0.02 * k))
        out = out + 0.16 * _sig(0.014 - clav, 0.003)
    return out


# ----------------------------------------------------------------------------- findings


def _level(f: FindingSpec) -> int:
    return SEVERITY_SCALE[f.severity]


def _sides(f: FindingSpec) -> list[str]:
    return list(SIDES) if f.side == "both" else [f.side or "right"]


# (vertical, lateral) scale of the collapsed lung for each pneumothorax size; hedged last
_PTX_SCALE = ((0.92, 0.985), (0.87, 0.94), (0.80, 0.86))
_PTX_HEDGED = (0.95, 1.0)


def _pneumothorax(cv: _Canvas, lung: _Lung, f: FindingSpec | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(gap, pleural line) for a lung with a pneumothorax: the pleural air between the chest wall
    and the collapsed lung, and the thin visceral pleural line at the lung's edge."""
    if f is None or lung.side not in _sides(f):
        return None
    sv, sq = _PTX_HEDGED if f.hedged else _PTX_SCALE[_level(f)]
    # the lung shrinks towards a point at its medial base, so the gap is widest at the apex
    pq, pv = lung.med + 0.3 * lung.aq, lung.dome + 0.02
    lev = lung.level(pq + (lung.q - pq) / sq, pv + (cv.v - pv) / sv)
    above = _sig(lung.diaph_v - cv.v, 0.004)
    gap = _sig(lev - 1.0, 0.05) * above
    line = np.exp(-(((lev - 1.0) / 0.03) ** 2)) * lung.env * _sig(lung.diaph_v - 0.03 - cv.v, 0.01)
    return gap, (0.08 if f.hedged else 0.13) * line


# height of the fluid at the lateral chest wall above the dome, per size; hedged last
_EFFUSION_H = ((0.045, 0.075), (0.10, 0.15), (0.20, 0.27))
_EFFUSION_HEDGED = (0.01, 0.03)


def _draw_effusion(cv: _Canvas, f: FindingSpec, lungs: dict, eff: dict, D: np.ndarray) -> np.ndarray:
    lvl = _level(f)
    for side in _sides(f):
        lung = lungs[side]
        lo, hi = _EFFUSION_HEDGED if f.hedged else _EFFUSION_H[lvl]
        amp = 0.4 if f.hedged else 0.55
        lateral_top = lung.dome + 0.03 - cv.rng.uniform(lo, hi)
        t = np.clip((lung.q - lung.med) / (lung.lat - lung.med), 0.0, 1.0)
        meniscus = cv.rng.uniform(0.08, 0.11) if lvl == 0 else cv.rng.uniform(0.05, 0.08)
        surface = lateral_top + meniscus * (1.0 - t) ** 2  # higher at the chest wall
        fluid = _sig(cv.v - surface, 0.008) * lung.env
        visible = fluid * (1.0 - np.clip(lung.env - eff[side], 0.0, 1.0))  # not behind the heart
        D = D + amp * visible
        cv.add_box("Pleural Effusion", visible > 0.5)
    return D


def _smooth_noise(cv: _Canvas, cells: int, lo: float, hi: float) -> np.ndarray:
    """Values in [lo, hi] varying smoothly over about ``size / cells`` pixels."""
    coarse = cv.rng.uniform(lo, hi, size=(cells + 1, cells + 1)).astype(np.float32)
    return ndimage.zoom(coarse, cv.size / cells, order=1)[: cv.size, : cv.size]


def _blob(cv: _Canvas, cq: float, cvv: float, radius: float, lung: _Lung, lumps: int) -> np.ndarray:
    """A confluent, irregular opacity of about ``radius`` around (cq, cvv)."""
    rng = cv.rng
    acc = np.zeros_like(cv.u)
    for _ in range(lumps):
        oq, ov = (float(x) for x in rng.normal(0.0, radius * 0.35, size=2))
        rr = radius * rng.uniform(0.5, 0.8)
        acc += np.exp(-(((lung.q - cq - oq) ** 2 + (cv.v - cvv - ov) ** 2) / (rr * rr)))
    return _sig(acc * _smooth_noise(cv, 28, 0.7, 1.3) - 0.6, 0.2)


def _zone_point(
    cv: _Canvas, lung: _Lung, zone: str, lateral: tuple[float, float], margin: float
) -> tuple[float, float]:
    """A point of aerated lung in the zone; ``lateral`` in units of the lung's half width."""
    v0, v1 = lung.zone_range(zone)
    for _ in range(20):
        vv = cv.rng.uniform(v0 + 0.25 * (v1 - v0), v1 - 0.25 * (v1 - v0))
        qq = lung.qc + cv.rng.uniform(*lateral) * lung.aq
        if cv.visible_lung(lung, qq, vv, margin):
            return float(qq), float(vv)
    # a large heart can cover most of the zone: search it systematically, laterally first
    for m in (margin, 0.5 * margin, 0.0):
        for qq in np.linspace(lung.qc + 0.9 * lung.aq, lung.qc - 0.5 * lung.aq, 15):
            for vv in np.linspace(v0 + 0.15 * (v1 - v0), v1 - 0.15 * (v1 - v0), 7):
                if cv.visible_lung(lung, float(qq), float(vv), m):
                    return float(qq), float(vv)
    return float(lung.qc + 0.8 * lung.aq), float(0.5 * (v0 + v1))


def _draw_consolidation(cv: _Canvas, f: FindingSpec, lungs: dict, eff: dict, D: np.ndarray) -> np.ndarray:
    rng = cv.rng
    lung = lungs[_sides(f)[0]]
    radius = (0.05, 0.066, 0.088)[_level(f)]
    amp = 0.40
    if f.hedged:
        radius, amp = 0.038, 0.2
    lateral = (0.0, 0.55) if f.zone != "upper" else (-0.05, 0.5)
    cq, cvv = _zone_point(cv, lung, f.zone or "lower", lateral, margin=0.5 * radius)
    blob = _blob(cv, cq, cvv, radius, lung, int(rng.integers(5, 10)))
    op = blob * eff[lung.side] * _smooth_noise(cv, 24, 0.65, 1.0)  # patchy inside
    # air bronchograms: a few dark branching tubes inside the opacity
    if not f.hedged and rng.random() < 0.7:
        for _ in range(int(rng.integers(2, 4))):
            ang = rng.uniform(-0.9, 0.9) + math.pi * (rng.random() < 0.5)
            ln = radius * rng.uniform(0.7, 1.3)
            p0 = (cq - 0.3 * ln * math.cos(ang), cvv - 0.3 * ln * math.sin(ang))
            p1 = (cq + 0.7 * ln * math.cos(ang), cvv + 0.7 * ln * math.sin(ang))
            tube = _sig(0.005 - _seg_dist(lung.q, cv.v, p0, p1), 0.0015)
            op = op * (1.0 - 0.45 * tube)
    D = D + amp * op
    cv.add_box("Consolidation", op > 0.3)
    return D


def _draw_atelectasis(cv: _Canvas, f: FindingSpec, lungs: dict, eff: dict, D: np.ndarray) -> np.ndarray:
    rng = cv.rng
    lvl = _level(f)
    for side in _sides(f):
        lung = lungs[side]
        v0, v1 = lung.zone_range(f.zone or "lower")
        amp = 0.2 if f.hedged else 0.34
        if f.kind == "wedge" and not f.hedged:
            # triangle with its base on the diaphragm/lateral wall and apex towards the hilum
            apex = (lung.qc - 0.35 * lung.aq, 0.5 * (v0 + v1) - 0.04)
            base = (lung.qc + rng.uniform(0.3, 0.6) * lung.aq, v1 + 0.02)
            ax, ay = base[0] - apex[0], base[1] - apex[1]
            ln = math.hypot(ax, ay)
            along = ((lung.q - apex[0]) * ax + (cv.v - apex[1]) * ay) / (ln * ln)
            across = np.abs((lung.q - apex[0]) * ay - (cv.v - apex[1]) * ax) / ln
            half = (0.35 + 0.15 * lvl) * ln * np.clip(along, 0.0, 1.0)
            op = _sig(half - across, 0.004) * _sig(along, 0.02) * eff[side]
        else:
            # plate-like band(s): thin, elongated, nearly horizontal
            op = np.zeros_like(cv.u)
            n_bands = 1 if (lvl == 0 or f.hedged) else int(rng.integers(1, 3))
            for b in range(n_bands):
                for attempt in range(60):  # centre the band on aerated lung, clear of the heart
                    wide = attempt >= 30  # a large heart: move up and out
                    cq = lung.qc + rng.uniform(0.3 if wide else -0.2, 0.8 if wide else 0.5) * lung.aq
                    cvv = v1 - rng.uniform(0.03, 0.12 if wide else 0.07) - 0.035 * b
                    if cv.visible_lung(lung, cq, cvv, margin=0.02):
                        break
                ln = rng.uniform(0.10, 0.16) * (0.7 if f.hedged else 1.0)
                ang = math.radians(rng.uniform(-14.0, 14.0))
                p0 = (cq - 0.5 * ln * math.cos(ang), cvv - 0.5 * ln * math.sin(ang))
                p1 = (cq + 0.5 * ln * math.cos(ang), cvv + 0.5 * ln * math.sin(ang))
                thick = (0.007, 0.011, 0.014)[lvl] * (0.8 if f.hedged else 1.0)
                op = np.maximum(op, _sig(thick - _seg_dist(lung.q, cv.v, p0, p1), 0.004))
            op = op * eff[side]
        D = D + amp * op
        cv.add_box("Atelectasis", op > 0.3)
    return D


def _draw_edema(cv: _Canvas, f: FindingSpec, lungs: dict, eff: dict, D: np.ndarray) -> np.ndarray:
    lvl = _level(f)
    amp = 0.12 if f.hedged else (0.20, 0.27, 0.34)[lvl]
    spread = 1.0 if f.hedged else (1.0, 1.15, 1.3)[lvl]
    for side in SIDES:
        lung = lungs[side]
        hq, hv = 0.09, 0.45 + 0.5 * (lung.dome - 0.65)
        sq, sv = 0.13 * spread, 0.15 * spread
        haze = np.exp(-(((lung.q - hq) / sq) ** 2) - ((cv.v - hv) / sv) ** 2)
        D = D + amp * haze * eff[side] * _smooth_noise(cv, 12, 0.75, 1.0)  # fluffy
        if lvl == 2 and not f.hedged:  # septal (Kerley B) lines at the lateral bases
            for _ in range(4):
                vv = lung.cp_angle() - cv.rng.uniform(0.03, 0.12)
                qq = lung.lat - 0.01
                line = _sig(0.003 - _seg_dist(lung.q, cv.v, (qq - 0.03, vv), (qq, vv)), 0.001)
                D = D + 0.12 * line * lung.env
        cv.add_box("Edema", (haze > 0.3) & (eff[side] > 0.5))
    return D


def _draw_nodule(cv: _Canvas, f: FindingSpec, lungs: dict, eff: dict, D: np.ndarray) -> np.ndarray:
    rng = cv.rng
    lung = lungs[_sides(f)[0]]
    lo, hi = ((3.0, 4.2), (4.2, 5.6), (5.6, 7.5))[_level(f)]  # radius in pixels at 224 px
    amp = 0.45
    if f.hedged:
        lo, hi, amp = 2.6, 3.2, 0.25
    radius = rng.uniform(lo, hi) / 224.0
    lateral = (-0.1, 0.6) if (f.side == "left" and f.zone != "upper") else (-0.35, 0.55)
    cq, cvv = _zone_point(cv, lung, f.zone or "middle", lateral, margin=radius)
    dist = np.sqrt((lung.q - cq) ** 2 + (cv.v - cvv) ** 2)
    op = _sig(radius - dist, 0.6 * cv.px) * _sig(eff[lung.side] - 0.3, 0.1)
    D = D + amp * op
    cv.add_box("Nodule", op > 0.5)
    return D


_DRAW = {
    "Pleural Effusion": _draw_effusion,
    "Consolidation": _draw_consolidation,
    "Atelectasis": _draw_atelectasis,
    "Edema": _draw_edema,
    "Nodule": _draw_nodule,
}
