"""Procedural PA chest X-ray phantoms: the kit's embedded, fully labelled default dataset.

Every phantom is SYNTHETIC. It is drawn from a seed in three stages, so that a student can
read the generator top to bottom:

1. **Geometry** in a canonical patient frame ``(u, v)`` in millimetres (``u`` to the image's
   right, i.e. the patient's LEFT; ``v`` downwards; origin at the thorax centre). Lungs,
   heart, diaphragm domes, ribs, clavicles, spine and soft tissue are analytic shapes there.
2. **Nuisance**: the patient is scaled (habitus), rotated and shifted into the detector frame,
   breathes in more or less, and carries ECG electrodes, breast shadows, a side marker and
   collimation borders that are independent of the labels. ``PhantomConfig.nuisance`` scales
   all of it; ``nuisance=0`` gives the canonical template.
3. **Exposure**: attenuation -> quantum noise (larger where the detector sees fewer photons)
   -> gain / gamma / offset -> clip to [0, 1].

Why so much nuisance: when findings are plain intensity cues, a 16x16 pixel thumbnail beats
learned features, and the comparison teaches nothing. Here the
findings are sized in millimetres (they scale with the image size) and several need
*context*: cardiomegaly is a ratio (heart width over thorax width, measured on the masks that
are returned), an effusion is a meniscus that blunts one costophrenic angle, a pneumothorax is
a rim where lung markings are *missing* behind a thin pleural line (its mean intensity is
matched to the lung it replaces), a nodule is a round opacity *inside* the lungs (electrodes
are round too, but sit anywhere).

Only numpy and torch are imported here (the GPU box has nothing else); Pillow is imported
inside :func:`write_phantoms`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from radjepa_lab.data.findings import FINDINGS, STRUCTURES, make_report
from radjepa_lab.errors import ConfigError

GENERATOR_VERSION = "radjepa_lab phantom v1"


@dataclass
class PhantomConfig:
    """What to generate. All lengths are millimetres in the patient/detector plane.

    ``nuisance`` scales every label-independent variation (pose, habitus, inspiration,
    exposure, distractors); 0 gives the canonical template, 1 the default teaching mix.
    ``prevalence`` is one probability for all findings or a dict per finding (missing
    findings default to 0.3).
    """

    size: int = 128
    fov_mm: float = 400.0
    prevalence: float | dict[str, float] = 0.3
    nuisance: float = 1.0
    noise: float = 1.0
    ctr_range: tuple[float, float] = (0.38, 0.62)
    nodule_diameter_mm: tuple[float, float] = (38.0, 60.0)
    distractors: bool = True

    def __post_init__(self) -> None:
        if int(self.size) != self.size or self.size < 16:
            raise ConfigError(f"PhantomConfig.size={self.size!r}: use an integer >= 16 pixels.")
        self.size = int(self.size)
        if not self.fov_mm > 0:
            raise ConfigError(f"PhantomConfig.fov_mm={self.fov_mm!r}: must be > 0 millimetres.")
        if self.nuisance < 0:
            raise ConfigError(f"PhantomConfig.nuisance={self.nuisance!r}: must be >= 0.")
        if self.noise < 0:
            raise ConfigError(f"PhantomConfig.noise={self.noise!r}: must be >= 0.")
        lo, hi = self.ctr_range
        if not 0.2 <= lo < 0.5 < hi <= 0.75:
            raise ConfigError(
                f"PhantomConfig.ctr_range={self.ctr_range!r}: need 0.2 <= low < 0.5 < high <= 0.75 "
                "so both normal and enlarged hearts can be drawn."
            )
        if isinstance(self.prevalence, dict):
            unknown = set(self.prevalence) - set(FINDINGS)
            if unknown:
                raise ConfigError(
                    f"PhantomConfig.prevalence has unknown findings {sorted(unknown)}; "
                    f"valid names are {list(FINDINGS)}."
                )
        for name in FINDINGS:
            p = self.prevalence_of(name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"PhantomConfig.prevalence[{name!r}]={p!r}: must be in [0, 1].")

    def prevalence_of(self, finding: str) -> float:
        """Probability that ``finding`` is drawn as present."""
        if isinstance(self.prevalence, dict):
            return float(self.prevalence.get(finding, 0.3))
        return float(self.prevalence)


@dataclass
class Phantom:
    """One SYNTHETIC radiograph with its ground truth (image in [0, 1], air dark)."""

    image: np.ndarray
    labels: dict[str, int]
    masks: dict[str, np.ndarray]
    report: str
    meta: dict[str, Any] = field(default_factory=dict)

    def label_vector(self) -> np.ndarray:
        return np.array([self.labels[f] for f in FINDINGS], dtype=np.float32)

    def mask_stack(self) -> np.ndarray:
        return np.stack([self.masks[s] for s in STRUCTURES])


@dataclass
class PhantomBatch:
    images: np.ndarray  # [N, S, S] float32 in [0, 1]
    labels: np.ndarray  # [N, F] float32 (0/1), columns in FINDINGS order
    masks: np.ndarray  # [N, 4, S, S] bool, channels in STRUCTURES order
    reports: list[str]
    meta: list[dict[str, Any]]


# --------------------------------------------------------------------------------------
# seeds and small helpers


def derive_seed(seed: int, index: int) -> int:
    """Seed of phantom ``index`` in a batch/dataset with base ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]).generate_state(1)[0])


def _sat(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 1.0)


@lru_cache(maxsize=16)
def _grid(size: int, fov_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in mm, origin at the image centre (x right, y down)."""
    c = ((np.arange(size, dtype=np.float32) + 0.5) / size - 0.5) * np.float32(fov_mm)
    xx, yy = np.meshgrid(c, c)
    xx.setflags(write=False)
    yy.setflags(write=False)
    return xx, yy


class _Canvas:
    """Draws small objects (lines, discs, boxes) into an image-space layer inside a bbox.

    Thin overlays are drawn with per-object bounding boxes instead of full-image ops; this
    is what keeps the generator above 200 phantoms/s/core.
    """

    def __init__(self, size: int, fov_mm: float, pose: tuple[float, ...]) -> None:
        self.size = size
        self.pix = fov_mm / size  # mm per pixel
        self.fov = fov_mm
        self.pose = pose  # (sx, sy, cos, sin, tx, ty)
        self.layer = np.zeros((size, size), np.float32)

    def to_px(self, u: float, v: float) -> tuple[float, float]:
        """Canonical patient mm -> continuous pixel coordinates (col, row)."""
        sx, sy, c, s, tx, ty = self.pose
        x = c * sx * u - s * sy * v + tx
        y = s * sx * u + c * sy * v + ty
        return x / self.pix + self.size / 2 - 0.5, y / self.pix + self.size / 2 - 0.5

    def _box(self, x0: float, x1: float, y0: float, y1: float, pad: float):
        lo_c = max(int(math.floor(min(x0, x1) - pad)), 0)
        hi_c = min(int(math.ceil(max(x0, x1) + pad)) + 1, self.size)
        lo_r = max(int(math.floor(min(y0, y1) - pad)), 0)
        hi_r = min(int(math.ceil(max(y0, y1) + pad)) + 1, self.size)
        if lo_c >= hi_c or lo_r >= hi_r:
            return None
        cols = np.arange(lo_c, hi_c, dtype=np.float32)[None, :]
        rows = np.arange(lo_r, hi_r, dtype=np.float32)[:, None]
        return (slice(lo_r, hi_r), slice(lo_c, hi_c)), cols, rows

    def polyline(self, pts_px: list[tuple[float, float]], width_mm: float, amp: float) -> None:
        """Max-composited anti-aliased polyline; faint when thinner than a pixel (as a real
        detector would blur it)."""
        half = max(width_mm / 2 / self.pix, 0.5)
        amp = amp * min(1.0, math.sqrt(width_mm / 2 / self.pix / half))
        for (x0, y0), (x1, y1) in zip(pts_px[:-1], pts_px[1:], strict=True):
            box = self._box(x0, x1, y0, y1, half + 1.5)
            if box is None:
                continue
            sl, cols, rows = box
            dx, dy = x1 - x0, y1 - y0
            ll = dx * dx + dy * dy + 1e-9
            t = np.clip(((cols - x0) * dx + (rows - y0) * dy) / ll, 0.0, 1.0)
            d = np.hypot(cols - x0 - t * dx, rows - y0 - t * dy)
            np.maximum(self.layer[sl], amp * _sat(half + 0.5 - d), out=self.layer[sl])

    def disc(self, cx: float, cy: float, r_px: float, amp: float, ring: float = 0.0) -> None:
        """Solid disc (sphere-like profile), or a ring when ``ring`` > 0 (ring width in px)."""
        box = self._box(cx, cx, cy, cy, r_px + 1.5)
        if box is None:
            return
        sl, cols, rows = box
        d = np.hypot(cols - cx, rows - cy)
        if ring > 0:
            val = _sat(ring / 2 + 0.5 - np.abs(d - r_px + ring / 2))
            val = np.maximum(val, _sat(1.0 - d / max(ring, 0.7)))  # the snap's centre stud
        else:
            val = np.sqrt(_sat(1.0 - (d / (r_px + 0.5)) ** 2))
        self.layer[sl] += amp * val

    def box(self, cx: float, cy: float, hw: float, hh: float, angle: float, amp: float) -> None:
        """Filled rotated rectangle (pixel units), e.g. a pacemaker generator."""
        rr = hw + hh
        box = self._box(cx, cx, cy, cy, rr + 1.5)
        if box is None:
            return
        sl, cols, rows = box
        c, s = math.cos(angle), math.sin(angle)
        p = (cols - cx) * c + (rows - cy) * s
        q = -(cols - cx) * s + (rows - cy) * c
        val = _sat(hw + 0.5 - np.abs(p)) * _sat(hh + 0.5 - np.abs(q))
        np.maximum(self.layer[sl], amp * val, out=self.layer[sl])


_LETTERS = {
    "L": ("100", "100", "100", "100", "111"),
    "R": ("110", "101", "110", "101", "101"),
}


@lru_cache(maxsize=16)
def _glyph(letter: str, cell: int) -> np.ndarray:
    bitmap = np.array([[ch == "1" for ch in row] for row in _LETTERS[letter]])
    return np.kron(bitmap, np.ones((cell, cell), bool))


def _ellipse_depth(x, v, x0, v0, a, b_top, b_bot):
    """Approximate signed distance (mm, >0 inside) to an egg-shaped lung outline."""
    top = (v < v0).astype(np.float32)
    b = np.float32(b_bot) + np.float32(b_top - b_bot) * top
    e = np.sqrt(((x - x0) / a) ** 2 + ((v - v0) / b) ** 2)
    return (1.0 - e) * a


# canonical lung used to grow vessel trees (the rendered lungs vary around it)
_LUNG_X0, _LUNG_V0, _LUNG_A, _LUNG_BTOP, _LUNG_BBOT = 72.0, -10.0, 73.0, 140.0, 300.0
_HILUM = (42.0, -25.0)  # (lateral mm, vertical mm) of each hilum
_BANK_SPAN = ((-165.0, 165.0), (-175.0, 155.0))  # canonical u and v covered by the bank
_N_TREES = 16


def _inside_nominal_lung(x: np.ndarray, v: np.ndarray, margin: float) -> np.ndarray:
    b = np.where(v < _LUNG_V0, _LUNG_BTOP, _LUNG_BBOT)
    e = np.hypot((x - _LUNG_X0) / _LUNG_A, (v - _LUNG_V0) / b)
    return ((1 - e) * _LUNG_A > -margin) & (v < 85 + 0.0085 * (x - 60) ** 2) & (x > 16)


def _grow_tree(rng: np.random.Generator, n_gen: int = 8) -> list[np.ndarray]:
    """Segments [M, 4] = (x0, v0, x1, v1) per generation of one lung's vessel tree.

    Vectorised over all branch tips of a generation: each segment continues from its
    parent's end and forks in two, until it leaves the (nominal) lung.
    """
    ang = np.radians(np.array([-118, -92, -66, -40, -12, 18, 48, 78], float))
    ang = ang + np.radians(rng.uniform(-8, 8, ang.size))
    x0 = _HILUM[0] + 4 * np.cos(ang)
    v0 = _HILUM[1] + 4 * np.sin(ang)
    gens = []
    for g in range(n_gen):
        length = 30.0 * 0.8**g * rng.uniform(0.75, 1.25, ang.size)
        x1, v1 = x0 + length * np.cos(ang), v0 + length * np.sin(ang)
        keep = _inside_nominal_lung(x1, v1, -5.0)
        gens.append(np.stack([x0, v0, x1, v1], 1)[keep])
        x1, v1, ang = x1[keep], v1[keep], ang[keep]
        spread = np.radians(rng.uniform(14, 30, ang.size))
        tilt = np.radians(rng.uniform(-8, 8, ang.size))
        x0, v0 = np.repeat(x1, 2), np.repeat(v1, 2)
        ang = np.stack([ang + spread + tilt, ang - spread + tilt], 1).ravel()
    return gens


@lru_cache(maxsize=8)
def _vessel_bank(size: int, fov_mm: float) -> tuple[np.ndarray, int, float]:
    """A fixed bank of branching pulmonary-vessel trees drawn in the canonical frame.

    Why a bank: growing and drawing a tree costs milliseconds; sampling one of 16 x 16
    (right x left) pre-grown trees costs one gather. The bank has a fixed seed, so phantoms
    stay byte-identical across processes. Trees are rasterised as skeletons per generation,
    dilated to that generation's calibre (numpy shifts), then box-blurred for anti-aliasing.
    Returns (flat [K*N*N] float32 in [0, 1], N, mm per cell).
    """
    cell = min(max(1.0, fov_mm / size / 1.5), 4.0)
    (u_lo, u_hi), (v_lo, v_hi) = _BANK_SPAN
    n = int(math.ceil(max(u_hi - u_lo, v_hi - v_lo) / cell))
    rng = np.random.Generator(np.random.PCG64(20261127))
    bank = np.zeros((_N_TREES, n, n), np.float32)
    pad = 8
    for k in range(_N_TREES):
        trees = {side: _grow_tree(rng) for side in (-1.0, 1.0)}
        for g in range(len(trees[1.0])):
            width = 7.0 * 0.72**g  # mm
            skel = np.zeros((n + 2 * pad, n + 2 * pad), np.float32)
            for side, gens in trees.items():
                seg = gens[g]
                if not len(seg):
                    continue
                seg_len = np.hypot(seg[:, 2] - seg[:, 0], seg[:, 3] - seg[:, 1]).max()
                t = np.linspace(0.0, 1.0, int(math.ceil(seg_len / (0.5 * cell))) + 1)[None, :]
                uu = side * (seg[:, :1] + t * (seg[:, 2:3] - seg[:, :1]))
                vv = seg[:, 1:2] + t * (seg[:, 3:4] - seg[:, 1:2])
                iu = np.clip(np.round((uu - u_lo) / cell), 0, n - 1).astype(int) + pad
                iv = np.clip(np.round((vv - v_lo) / cell), 0, n - 1).astype(int) + pad
                skel[iv, iu] = 1.0
            r = width / 2 / cell
            amp = (width / 7.0) ** 0.45 * min(1.0, width / cell)
            dil = skel.copy()
            rr = int(math.floor(r + 0.5))
            for dy in range(-rr, rr + 1):
                for dx in range(-rr, rr + 1):
                    if (dy or dx) and dy * dy + dx * dx <= (r + 0.5) ** 2:
                        np.maximum(dil, np.roll(skel, (dy, dx), (0, 1)), out=dil)
            np.maximum(bank[k], amp * dil[pad:-pad, pad:-pad], out=bank[k])
        b = bank[k]
        blur = b.copy()
        blur[1:] += b[:-1]
        blur[:-1] += b[1:]
        b2 = blur.copy()
        b2[:, 1:] += blur[:, :-1]
        b2[:, :-1] += blur[:, 1:]
        bank[k] = b2 / 9.0
    return bank.ravel(), n, cell


@lru_cache(maxsize=4)
def _noise_bank(min_len: int) -> np.ndarray:
    """Fixed standard-normal samples; each phantom reads a random window (no per-call RNG cost)."""
    n = max(1 << 21, 4 * min_len)
    return np.random.Generator(np.random.PCG64(7)).standard_normal(n, dtype=np.float32)


@lru_cache(maxsize=8)
def _bone_bank(size: int, fov_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Bones of the canonical template (posterior and anterior ribs, clavicles, spine with
    disc spaces, tracheal air), drawn once per image size on the vessel-bank grid.

    They do not depend on the findings and only shift with inspiration, so each phantom
    samples them with the same gather as the vessels instead of recomputing ~40 full-image
    operations. Returns (attenuation [N*N] float32, rib mask [N*N] bool).
    """
    _, n, cell = _vessel_bank(size, fov_mm)
    (u_lo, _), (v_lo, _) = _BANK_SPAN
    c = np.arange(n, dtype=np.float32) * np.float32(cell)
    v, u = np.meshgrid(c + np.float32(v_lo), c + np.float32(u_lo), indexing="ij")
    x = np.abs(u)
    edge = max(1.5, 0.9 * cell)
    apex_v = -150.0
    d_ell = _ellipse_depth(x, v, _LUNG_X0, _LUNG_V0, _LUNG_A, _LUNG_V0 - apex_v, _LUNG_BBOT)
    # posterior ribs: one periodic phase field gives all arcs at once
    xr = x - 45.0
    arc = xr * xr * (np.float32(0.006) - np.float32(0.0015) * (xr > 0))
    vr = np.clip((v - arc - (apex_v - 2.0)) / 23.0, 0.0, 12.0)
    p_rib = vr - 0.012 * vr * vr  # rib spacing widens towards the base
    k_rib = np.floor(p_rib)
    q = (p_rib - k_rib) * (23.0 + 0.6 * k_rib)  # mm into the current rib cycle
    band = _sat(np.minimum(q, 10.0 + 0.35 * k_rib - q) / edge)
    cortex = 0.8 + 0.2 * _sat(1.0 - np.minimum(q, 10.0 + 0.35 * k_rib - q) / 2.5)
    cage = _sat(np.minimum(d_ell + 14.0, x - 16.0) / edge) * (k_rib < 10)
    ribs = band * cage
    bone = 0.065 * ribs * cortex
    # anterior ribs: fainter, sloping down towards the midline, seen over the lungs
    pa = (v + 0.55 * x + 120.0) / 26.0
    qa = (pa - np.floor(pa)) * 26.0
    bone += 0.03 * _sat(np.minimum(qa, 9.0 - qa) / edge) * _sat((x - 50.0) / 20.0) * _sat(
        d_ell / 10.0)
    # clavicles
    v_cl = -140.0 - 0.2 * (x - 20.0) + 0.0012 * (x - 80.0) ** 2
    bone += 0.10 * _sat((8.0 - np.abs(v - v_cl)) / edge) * _sat((x - 18.0) / edge) * _sat(
        (150.0 - x) / 8.0)
    # spine: vertebral bodies with disc spaces; the tracheal air column in front of it
    pv = (v + 200.0) / 27.0
    disc = _sat(np.abs(pv - np.floor(pv) - 0.5) * (27.0 / 2.5) - 0.3)
    bone += 0.08 * _sat((17.0 - x) / edge) * (1.0 - 0.5 * disc)
    bone -= 0.08 * _sat((8.0 - x) / edge) * _sat((-50.0 - v) / edge)
    return bone.astype(np.float32).ravel(), (ribs > 0.5).ravel()


def _bank_index(u: np.ndarray, v: np.ndarray, size: int, fov: float) -> np.ndarray:
    """Flat index of the bank cell under each pixel (nearest cell; edges replicate)."""
    _, n, cell = _vessel_bank(size, fov)
    (u_lo, _), (v_lo, _) = _BANK_SPAN
    iu = np.clip((u - u_lo) * np.float32(1 / cell), 0, n - 1).astype(np.int32)
    iv = np.clip((v - v_lo) * np.float32(1 / cell), 0, n - 1).astype(np.int32)
    return iv * n + iu


# --------------------------------------------------------------------------------------
# the generator


def generate_phantom(seed: int, cfg: PhantomConfig | None = None) -> Phantom:
    """Render one SYNTHETIC PA chest radiograph; identical bytes for identical (seed, cfg)."""
    cfg = cfg or PhantomConfig()
    # two independent streams: nuisance (pose, exposure, distractors) and findings, so the
    # same seed with a different prevalence gives the same patient with other findings
    ss_nuis, ss_find = np.random.SeedSequence(int(seed)).spawn(2)
    rng = np.random.Generator(np.random.PCG64(ss_nuis))
    rfind = np.random.Generator(np.random.PCG64(ss_find))
    per_finding = dict(zip(FINDINGS, ss_find.spawn(len(FINDINGS)), strict=True))

    def finding_rng(name: str) -> np.random.Generator:
        """Each finding's geometry has its own stream: adding one finding moves no other."""
        return np.random.Generator(np.random.PCG64(per_finding[name]))
    S, fov, eta = cfg.size, float(cfg.fov_mm), float(cfg.nuisance)
    f32 = np.float32

    def nu(spread: float) -> float:
        """A label-independent nuisance draw: uniform in +-spread, scaled by cfg.nuisance."""
        return float(rng.uniform(-1.0, 1.0)) * spread * eta

    # ---- labels first (the nuisance below never depends on them) ----
    want = {f: int(rfind.random() < cfg.prevalence_of(f)) for f in FINDINGS}
    lo, hi = cfg.ctr_range
    target_ctr = float(rfind.uniform(0.5, hi) if want["cardiomegaly"] else rfind.uniform(lo, 0.5))

    # ---- pose and habitus ----
    scale = 1.0 + nu(0.12)
    sx = scale * (1.0 + nu(0.10))  # body habitus: broad vs slim chest
    sy = scale * (1.0 + nu(0.04))
    rot = math.radians(nu(8.0))
    tx, ty = nu(0.08) * fov, 5.0 + nu(0.08) * fov
    cr, sr = math.cos(rot), math.sin(rot)
    insp = nu(1.0)  # inspiration depth, -1 shallow .. +1 deep

    xx, yy = _grid(S, fov)
    px, py = xx - f32(tx), yy - f32(ty)
    u = (f32(cr) * px + f32(sr) * py) * f32(1 / sx)
    v = (f32(-sr) * px + f32(cr) * py) * f32(1 / sy)
    right = u < 0  # patient's right = image left
    rf = right.astype(f32)
    x = np.abs(u)  # lateral distance from the midline
    pix_c = fov / S / math.sqrt(sx * sy)  # canonical mm per pixel
    edge = max(1.5, 0.6 * pix_c)  # anti-aliasing width of anatomical edges (mm)

    def by_side(r_val: float, l_val: float) -> np.ndarray:
        return f32(l_val) + f32(r_val - l_val) * rf

    # ---- lungs: egg-shaped fields cut by the mediastinum and the diaphragm domes ----
    half_w = {"r": 145.0 + nu(6.0), "l": 145.0 + nu(6.0)}  # lateral extent of each lung
    a_r, a_l = half_w["r"] - _LUNG_X0, half_w["l"] - _LUNG_X0
    dome_r = 62.0 + 16.0 * insp + nu(4.0)
    dome_l = dome_r + 13.0 + nu(5.0)
    apex_v = -150.0 - 6.0 * insp
    d_ell = _ellipse_depth(x, v, _LUNG_X0, _LUNG_V0, by_side(a_r, a_l), _LUNG_V0 - apex_v,
                           _LUNG_BBOT)
    dx_dome = x - 60.0
    c_dia = f32(0.010) - f32(0.0015) * (dx_dome > 0).astype(f32)
    v_dia = by_side(dome_r, dome_l) + c_dia * dx_dome * dx_dome
    d_dia = v_dia - v
    knob = 16.0 + nu(4.0)
    x_med = 20.0 + rf * 7.0 * np.exp(-(((v + 70.0) / 40.0) ** 2))  # SVC / paratracheal
    x_med += (1.0 - rf) * knob * np.exp(-(((v + 78.0) / 18.0) ** 2))  # aortic knob
    depth = np.minimum(np.minimum(d_ell, d_dia), x - x_med)  # mm into the lung field
    lung_in = depth > 0
    lung_soft = _sat(depth / edge)
    ramp = _sat(depth / 50.0)
    air = lung_soft * (0.5 + 0.5 * ramp * (2.0 - ramp)) * (1.0 - 0.25 * _sat((v - 10.0) / 90.0))

    # ---- heart: tilted ellipse whose horizontal extent is ctr * thorax width ----
    thorax_w = half_w["r"] + half_w["l"]
    heart_w = target_ctr * thorax_w
    frac_r = 0.33 + nu(0.07)  # share of the heart to the patient's right of the midline
    alpha = math.radians(30.0 + nu(8.0) - 8.0 * insp)  # deep inspiration -> more vertical
    ratio = 0.74 + nu(0.06)
    ca, sa = math.cos(alpha), math.sin(alpha)
    ah = heart_w / 2 / math.sqrt(ca * ca + ratio * ratio * sa * sa)
    bh = ratio * ah
    uc = -frac_r * heart_w + heart_w / 2
    vc = dome_l + 12.0 - 0.45 * ah + nu(8.0)
    du, dv = u - f32(uc), v - f32(vc)
    hp = (du * f32(ca) + dv * f32(sa)) * f32(1 / ah)
    hq = (-du * f32(sa) + dv * f32(ca)) * f32(1 / bh)
    heart_d = (1.0 - np.sqrt(hp * hp + hq * hq)) * bh
    below_dia = _sat((v - v_dia - 4.0) / edge)
    heart_soft = _sat(heart_d / edge) * (1.0 - below_dia)
    heart_in = (heart_d > 0) & (v < v_dia + 4.0)

    # ---- soft tissue and the body outline ----
    soft = 1.0 + nu(0.25)  # soft-tissue thickness
    body_hw = 150.0 + 22.0 * soft + 14.0 * _sat((-v - 100.0) / 60.0)
    t_body = _sat(1.0 - (u / body_hw) ** 2)
    A = (0.50 + 0.14 * soft) * np.sqrt(np.sqrt(t_body)) * _sat((body_hw - x) / (2 * edge))
    A += 0.08 * _sat((v - dome_r - 20.0) / 60.0) * t_body  # abdomen thicker than chest
    # lung air removes density; behind the heart only partly (retrocardiac lung)
    A -= (0.46 + nu(0.04)) * air * (1.0 - 0.7 * heart_soft)
    A += (0.05 + nu(0.04)) * heart_soft  # heart density varies (fat pad, exposure)
    A += 0.09 * np.exp(((x - _HILUM[0]) ** 2 + (v - _HILUM[1]) ** 2) * f32(-1 / (2 * 13.0**2)))

    # ---- vascular markings: pre-grown branching trees, one per lung ----
    # (the same gather also fetches the bones; both shift up with deeper inspiration)
    vessel_flat, n_bank, _ = _vessel_bank(S, fov)
    bank_idx = _bank_index(u, v + f32(6.0 * insp), S, fov)
    trees = rng.integers(0, _N_TREES, 2) if eta > 0 else np.zeros(2, np.int64)
    nn = n_bank * n_bank
    tree_off = int(trees[1]) * nn + (int(trees[0]) - int(trees[1])) * nn * right.astype(np.int32)
    V = vessel_flat[bank_idx + tree_off]
    V *= lung_soft * (1.0 - 0.7 * heart_soft)  # retrocardiac vessels are faint

    # ---- findings that change the lung contents ----
    meta: dict[str, Any] = {}
    sides = ("right", "left")
    if want["pneumothorax"]:
        rfind = finding_rng("pneumothorax")
        side = sides[int(rfind.integers(2))]
        shrink = float(rfind.uniform(0.66, 0.84))
        a_s = a_r if side == "right" else a_l
        hx, hv = 35.0, 70.0  # the lung collapses towards its base and hilum
        xs, vs = hx + (x - hx) * f32(1 / shrink), hv + (v - hv) * f32(1 / shrink)
        d_col = _ellipse_depth(xs, vs, _LUNG_X0, _LUNG_V0, a_s, _LUNG_V0 - apex_v, _LUNG_BBOT)
        d_col *= f32(shrink)
        on_side = lung_in & (right if side == "right" else ~right)
        ptx = on_side & (d_col < 0)
        if ptx.any():
            V[ptx] = V[ptx].mean()  # same mean density as the lung it replaces, no markings
        line_w = max(1.5, 0.45 * pix_c)
        A += 0.13 * np.exp(-((d_col / line_w) ** 2)) * on_side
        meta["pneumothorax_side"] = side
        meta["pneumothorax_rim_mm"] = round((1 - shrink) * (hv - apex_v), 1)
    A += (0.15 + nu(0.03)) * V

    if want["effusion"]:
        rfind = finding_rng("effusion")
        side = sides[int(rfind.integers(2))]
        height = float(rfind.uniform(40.0, 120.0))  # meniscus height above the CP angle
        d0 = dome_r if side == "right" else dome_l
        hw_s = half_w[side[0]]
        v_cp = d0 + 0.0085 * (hw_s - 60.0) ** 2 - 8.0
        v_men = v_cp - height + 0.55 * height * _sat((hw_s - x) / (hw_s - 20.0)) ** 2
        on_side = rf if side == "right" else 1.0 - rf
        fill = _sat((v - v_men) / 14.0) * on_side
        A += (0.46 + 0.04) * air * fill * (1.0 - 0.7 * heart_soft)  # fluid replaces the air
        A -= 0.15 * V * fill
        meta["effusion_side"] = side
        meta["effusion_height_mm"] = round(height, 1)

    if want["consolidation"]:
        rfind = finding_rng("consolidation")
        side = sides[int(rfind.integers(2))]
        zone = ("upper", "mid", "lower")[int(rfind.integers(3))]
        cv = {"upper": -95.0, "mid": -30.0, "lower": 35.0}[zone] + float(rfind.uniform(-12, 12))
        cx = float(rfind.uniform(70.0, 105.0))
        rc = float(rfind.uniform(35.0, 55.0))
        sgn = -1.0 if side == "right" else 1.0
        dcu, dcv = u - f32(sgn * cx), v - f32(cv)
        ph = rfind.uniform(0, 2 * math.pi, 4)
        wob = (1.0 + 0.2 * np.sin(dcu * f32(0.06) + ph[0]) * np.cos(dcv * f32(0.05) + ph[1]))
        rad = np.sqrt(dcu * dcu + dcv * dcv) * f32(1 / rc) * wob
        blob = _sat((1.0 - rad) * f32(1 / 0.35))
        patch = 0.75 + 0.25 * np.sin(dcu * f32(0.11) + ph[2]) * np.cos(dcv * f32(0.09) - ph[3])
        other = (int(trees[0]) + 1 + int(rfind.integers(_N_TREES - 1))) % _N_TREES
        bronch = vessel_flat[bank_idx + other * nn]
        A += 0.50 * blob * patch * lung_soft * (1.0 - 0.8 * bronch) - 0.15 * V * blob
        meta["consolidation_side"] = side
        meta["consolidation_zone"] = zone

    # ---- bones (pre-drawn template, see _bone_bank) ----
    bone_flat, rib_flat = _bone_bank(S, fov)
    A += bone_flat[bank_idx] * (1.0 - 0.5 * below_dia)
    ribs_mask = rib_flat[bank_idx]
    # gastric bubble under the left dome (present or not, independent of labels)
    if rng.random() < 0.6 * min(eta, 1.0):
        gb = ((u - 70.0) * f32(1 / 28.0)) ** 2 + ((v - dome_l - 30.0) * f32(1 / 16.0)) ** 2
        A -= 0.14 * _sat((1.0 - gb) * 3.0)
    # breast shadows (about half the patients)
    if rng.random() < 0.5 * min(eta, 1.0):
        rb = 1.0 + nu(0.3)
        eb = ((x - 95.0) / (80.0 * rb)) ** 2 + ((v - 95.0) / (60.0 * rb)) ** 2
        A += (0.07 + nu(0.02)) * _sat((1.0 - eb) * 4.0) * _sat((v - 40.0) / 50.0)
        meta["breast_shadows"] = True

    # ---- overlays drawn in pixel space: nodules, devices, electrodes ----
    cv_ = _Canvas(S, fov, (sx, sy, cr, sr, tx, ty))
    if want["nodule"]:
        rfind = finding_rng("nodule")
        d_mm = float(rfind.uniform(*cfg.nodule_diameter_mm))
        for _ in range(200):  # rejection-sample a centre well inside a lung, off the heart
            nu_ = (-1.0 if rfind.random() < 0.5 else 1.0) * rfind.uniform(35.0, 140.0)
            nv_ = rfind.uniform(-130.0, 80.0)
            ci, ri_ = cv_.to_px(nu_, nv_)
            ci_i, ri_i = int(round(ci)), int(round(ri_))
            if not (0 <= ci_i < S and 0 <= ri_i < S):
                continue
            if depth[ri_i, ci_i] > 0.45 * d_mm and heart_d[ri_i, ci_i] < -0.3 * d_mm:
                break
        cv_.disc(ci, ri_, d_mm / 2 * math.sqrt(sx * sy) / cv_.pix, 0.20 + 0.08 * rfind.random())
        meta["nodule_diameter_mm"] = round(d_mm, 1)
        meta["nodule_side"] = "right" if nu_ < 0 else "left"

    if want["support_device"]:
        rfind = finding_rng("support_device")
        kinds = [k for k, p in (("ett", 0.6), ("cvc", 0.6), ("pacemaker", 0.3)) if rfind.random() < p]
        if not kinds:
            kinds = [("ett", "cvc", "pacemaker")[int(rfind.integers(3))]]
        if "ett" in kinds:
            tip = -95.0 + float(rfind.uniform(-15.0, 20.0))
            pts = [cv_.to_px(2.0, -260.0), cv_.to_px(0.0, tip)]
            cv_.polyline(pts, 8.0, 0.10)
            cv_.polyline(pts, 1.8, 0.40)  # radio-opaque stripe
        if "cvc" in kinds:
            s_ = -1.0 if rfind.random() < 0.7 else 1.0
            pts = [(s_ * 175.0, -175.0), (s_ * 80.0, -150.0), (s_ * 35.0, -118.0), (-18.0, -70.0)]
            pts.append((-16.0, -45.0 + float(rfind.uniform(-10, 25))))
            cv_.polyline([cv_.to_px(*p) for p in pts], 2.6, 0.40)
        if "pacemaker" in kinds:
            bx, by = cv_.to_px(115.0, -150.0 + float(rfind.uniform(-10, 10)))
            cv_.box(bx, by, 20.0 / cv_.pix * scale, 16.0 / cv_.pix * scale, rot + 0.3, 0.7)
            lead = [(100.0, -140.0), (45.0, -115.0), (5.0, -65.0), (-12.0, -15.0), (35.0, 55.0)]
            cv_.polyline([cv_.to_px(*p) for p in lead], 2.2, 0.5)
        meta["devices"] = kinds

    n_ecg = int(rng.integers(0, 5)) if (cfg.distractors and eta > 0) else 0
    for _ in range(n_ecg):
        ex, ey = cv_.to_px(float(rng.uniform(-165, 165)), float(rng.uniform(-160, 130)))
        r_px = float(rng.uniform(9.0, 12.0)) / cv_.pix * scale
        cv_.disc(ex, ey, r_px, 0.40, ring=max(2.5 / cv_.pix, 0.8))
        ang, bend = float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(-0.6, 0.6))
        wire = [(ex + r_px * math.cos(ang), ey + r_px * math.sin(ang))]
        step = 0.15 * S
        for _k in range(int(rng.integers(1, 4))):
            wire.append((wire[-1][0] + step * math.cos(ang), wire[-1][1] + step * math.sin(ang)))
            ang += bend
        cv_.polyline(wire, 1.8, 0.30)
    meta["ecg_electrodes"] = n_ecg
    A += cv_.layer

    # ---- exposure: quantum noise, heel effect, gain / gamma / offset ----
    A += f32(nu(0.05) / fov) * yy  # heel effect / uneven exposure
    np.maximum(A, 0.0, out=A)
    sigma = (0.011 + nu(0.006)) * cfg.noise
    noise_src = _noise_bank(S * S)
    off = int(rng.integers(0, noise_src.size - S * S))
    noise = noise_src[off : off + S * S].reshape(S, S)
    A += f32(sigma) * np.exp(1.2 * A) * noise  # fewer photons behind dense tissue -> noisier
    gain, gamma, offset = 1.1 + nu(0.15), math.exp(nu(0.25)), 0.02 + nu(0.05)
    # display curve as a lookup table (a power per pixel is the slowest op we would have)
    n_lut = 4096
    a_max = 1.6
    lut = np.clip(offset + gain * np.linspace(0, a_max, n_lut) ** gamma, 0, 1).astype(f32)
    img = lut[np.clip(A * f32((n_lut - 1) / a_max), 0, n_lut - 1).astype(np.int32)]

    # collimation borders (unexposed: bright) and the side marker (on the detector)
    if cfg.distractors and eta > 0:
        cval = 0.92 + 0.06 * float(rng.random())
        for k in range(4):
            if rng.random() < 0.35 * min(eta, 1.0):
                w = int(round(rng.uniform(0.02, 0.10) * S * min(eta, 1.0)))
                if w > 0:
                    sl = [np.s_[:w, :], np.s_[-w:, :], np.s_[:, :w], np.s_[:, -w:]][k]
                    img[sl] = cval
        letter = "L" if rng.random() < 0.8 else "R"
        cell = max(1, int(round(S / 90)))
        r0 = int(rng.integers(2, max(3, S // 8)))
        c0 = S - 2 - 3 * cell - int(rng.integers(0, max(1, S // 10)))
        if rng.random() < 0.5:
            c0 = 2 + int(rng.integers(0, max(1, S // 10)))
        glyph = _glyph(letter, cell)
        img[r0 : r0 + 5 * cell, c0 : c0 + 3 * cell][glyph] = 0.97
        meta["marker"] = letter

    # ---- masks and honest labels ----
    lungs = lung_in & ~heart_in
    masks = {
        "right_lung": lungs & right,
        "left_lung": lungs & ~right,
        "heart": heart_in,
        "ribs": ribs_mask,
    }
    ctr = measure_ctr(masks)
    labels = dict(want)
    labels["cardiomegaly"] = int(ctr > 0.5)
    meta.update(
        seed=int(seed),
        ctr=round(ctr, 4),
        target_ctr=round(target_ctr, 4),
        rotation_deg=round(math.degrees(rot), 3),
        scale=round(scale, 4),
        scale_xy=(round(sx, 4), round(sy, 4)),
        shift_mm=(round(tx, 2), round(ty - 5.0, 2)),
        inspiration=round(insp, 3),
        soft_tissue=round(soft, 3),
        exposure={"gain": round(gain, 3), "gamma": round(gamma, 3), "offset": round(offset, 3),
                  "noise_sigma": round(sigma, 4)},
        generator=GENERATOR_VERSION,
        synthetic=True,
    )
    report = make_report(labels, meta)
    return Phantom(image=img, labels=labels, masks=masks, report=report, meta=meta)


def measure_ctr(masks: dict[str, np.ndarray]) -> float:
    """Cardiothoracic ratio measured on masks: heart width / width of both lungs (columns)."""
    heart_cols = np.flatnonzero(masks["heart"].any(axis=0))
    lung_cols = np.flatnonzero((masks["right_lung"] | masks["left_lung"]).any(axis=0))
    if heart_cols.size == 0 or lung_cols.size == 0:
        return float("nan")
    return float((heart_cols[-1] - heart_cols[0] + 1) / (lung_cols[-1] - lung_cols[0] + 1))


# --------------------------------------------------------------------------------------
# batches, datasets, files


def generate_batch(n: int, seed: int, cfg: PhantomConfig | None = None) -> PhantomBatch:
    """``n`` phantoms; phantom ``i`` is ``generate_phantom(derive_seed(seed, i), cfg)``."""
    cfg = cfg or PhantomConfig()
    S = cfg.size
    images = np.empty((n, S, S), np.float32)
    labels = np.empty((n, len(FINDINGS)), np.float32)
    masks = np.empty((n, len(STRUCTURES), S, S), bool)
    reports, metas = [], []
    for i in range(n):
        p = generate_phantom(derive_seed(seed, i), cfg)
        images[i] = p.image
        labels[i] = p.label_vector()
        masks[i] = p.mask_stack()
        reports.append(p.report)
        metas.append(p.meta)
    return PhantomBatch(images, labels, masks, reports, metas)


class PhantomDataset(Dataset):
    """Lazily generated phantoms (works on the fly in DataLoader workers).

    Item ``i`` equals ``generate_batch(n, seed, cfg)`` row ``i``. ``.labels`` is computed on
    first access (it renders every phantom once, then caches).
    """

    def __init__(self, n: int, seed: int = 0, cfg: PhantomConfig | None = None,
                 return_masks: bool = False) -> None:
        if n < 0:
            raise ConfigError(f"PhantomDataset n={n!r}: must be >= 0.")
        self.n, self.seed, self.cfg = int(n), int(seed), cfg or PhantomConfig()
        self.return_masks = return_masks
        self.pathologies = list(FINDINGS)
        self._labels: np.ndarray | None = None

    def __len__(self) -> int:
        return self.n

    def phantom(self, idx: int) -> Phantom:
        if not -self.n <= idx < self.n:
            raise IndexError(f"PhantomDataset index {idx} out of range for length {self.n}")
        return generate_phantom(derive_seed(self.seed, idx % self.n), self.cfg)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        p = self.phantom(idx)
        item: dict[str, Any] = {
            "img": torch.from_numpy(p.image).unsqueeze(0),
            "lab": torch.from_numpy(p.label_vector()),
            "idx": int(idx) % max(self.n, 1),
            "report": p.report,
        }
        if self.return_masks:
            item["masks"] = torch.from_numpy(p.mask_stack().astype(np.uint8))
        return item

    def fingerprint(self) -> str:
        """The generator version, its config, the seed and the count define every item, so
        they key the embedding cache (no phantom needs rendering to know it changed)."""
        spec = [GENERATOR_VERSION, self.n, self.seed, self.return_masks,
                dataclasses.asdict(self.cfg)]
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()

    @property
    def labels(self) -> np.ndarray:
        if self._labels is None:
            self._labels = np.stack([self.phantom(i).label_vector() for i in range(self.n)]) \
                if self.n else np.zeros((0, len(FINDINGS)), np.float32)
        return self._labels


def write_phantoms(n: int, size: int, out_dir: str | Path, seed: int = 0,
                   cfg: PhantomConfig | None = None) -> Path:
    """Write ``n`` SYNTHETIC phantoms as PNGs + masks + labels.csv + reports.jsonl.

    Layout (see data/README.md): ``images/phantom_00000.png`` (8-bit gray),
    ``masks/phantom_00000.png`` (8-bit, bit k set where STRUCTURES[k] is present),
    ``labels.csv`` (path, findings, ctr, synthetic=SYNTHETIC) and ``reports.jsonl``.
    """
    import csv
    import json

    from PIL import Image, PngImagePlugin

    base = cfg or PhantomConfig()
    cfg = PhantomConfig(**{**base.__dict__, "size": int(size)})
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    bits = np.array([1 << k for k in range(len(STRUCTURES))], np.uint8)[:, None, None]
    with open(out / "labels.csv", "w", newline="") as fcsv, \
            open(out / "reports.jsonl", "w") as fjs:
        w = csv.writer(fcsv)
        w.writerow(["path", *FINDINGS, "ctr", "seed", "synthetic"])
        for i in range(n):
            s = derive_seed(seed, i)
            p = generate_phantom(s, cfg)
            name = f"phantom_{i:05d}.png"
            img8 = np.round(p.image * 255.0).astype(np.uint8)
            info = PngImagePlugin.PngInfo()
            info.add_text("Comment", f"SYNTHETIC phantom ({GENERATOR_VERSION}, seed {s}); "
                          "not a patient image")
            Image.fromarray(img8).save(out / "images" / name, optimize=True, pnginfo=info)
            m8 = (p.mask_stack().astype(np.uint8) * bits).sum(0).astype(np.uint8)
            Image.fromarray(m8).save(out / "masks" / name, optimize=True)
            w.writerow([f"images/{name}", *(p.labels[f] for f in FINDINGS),
                        f"{p.meta['ctr']:.4f}", s, "SYNTHETIC"])
            fjs.write(json.dumps({"path": f"images/{name}", "report": p.report,
                                  "labels": p.labels, "meta": p.meta}) + "\n")
    return out


def read_mask_png(path: str | Path) -> dict[str, np.ndarray]:
    """Decode a mask PNG written by :func:`write_phantoms` into one bool array per structure."""
    from PIL import Image

    m = np.asarray(Image.open(path))
    return {s: (m & (1 << k)) > 0 for k, s in enumerate(STRUCTURES)}


def phantom_columns(batch: Any) -> dict[str, np.ndarray]:
    """Colour-by columns for embedding maps: each finding, then phantom metadata.

    ``batch`` is a ``data.phantom.PhantomBatch``. Metadata columns (pose, inspiration,
    exposure, the random side marker) are nuisance: a good embedding should NOT be organised
    by them.
    """
    meta = batch.meta
    cols: dict[str, np.ndarray] = {f: batch.labels[:, j].astype(int) for j, f in enumerate(FINDINGS)}
    cols["number of findings"] = batch.labels.sum(1).astype(int)
    nan = float("nan")
    cols["cardiothoracic ratio"] = np.array([m.get("ctr", nan) for m in meta], float)
    cols["effusion side"] = np.array([m.get("effusion_side", "none") for m in meta])
    cols["rotation (deg)"] = np.array([m.get("rotation_deg", nan) for m in meta], float)
    cols["inspiration"] = np.array([m.get("inspiration", nan) for m in meta], float)
    cols["exposure gain"] = np.array([m.get("exposure", {}).get("gain", nan) for m in meta],
                                     float)
    cols["side marker letter"] = np.array([m.get("marker", "none") for m in meta])
    return cols


def _stack_images(items: list[dict[str, Any]]) -> np.ndarray:
    return np.stack([it["img"][0].numpy() for it in items])


def phantom_images(n: int, seed: int, size: int, num_workers: int = 0) -> np.ndarray:
    """``[n, size, size]`` float32 phantoms, identical to ``PhantomDataset(n, seed, ...)``.

    Generated once (in ``num_workers`` processes when > 0) so that a notebook that trains in
    two sessions (``max_steps`` then ``resume=True``) does not render the dataset twice.
    """
    from torch.utils.data import DataLoader

    ds = PhantomDataset(n, seed=seed, cfg=PhantomConfig(size=size))
    loader = DataLoader(ds, batch_size=64, num_workers=num_workers, collate_fn=_stack_images)
    return np.concatenate(list(loader)) if n else np.zeros((0, size, size), np.float32)
