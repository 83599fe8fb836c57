"""A deterministic toy street-scene domain-shift dataset: a tiny GTA5 → Cityscapes stand-in.

`generate_toy_dataset` writes a "simulator" source in the GTA5 layout and a "camera" target in the
Cityscapes layout (SPEC §7), small enough that the whole SPCL pipeline runs on a CPU in minutes.
Called by `tools/make_toy.py`, by the tests and by anything that points at `datasets/toy`.

Both domains share one scene model: a pinhole camera 1.6 m above a straight street; sky above a
random horizon; building / vegetation facades (perspective-correct, with windows) on both sides and
a distant skyline; the road as a perspective trapezoid with lane markings, sidewalks beside it,
grass strips, walls and fences in front of facades; poles carrying signs and traffic lights; trees;
cars, trucks, buses, persons, riders on bicycles / motorcycles and parked bicycles, painted
far-to-near. Class identity is therefore recoverable from shared cues: position in the frame,
object shapes and sizes, and the relative brightness ordering (sky > sidewalk > road, terrain >
vegetation, windows darker than walls). Everything that differs is a field of `DomainStyle`
(`SOURCE_STYLE`, `TARGET_STYLE`), so the shift can be tuned in one place:

* per-class colours: saturated simulator colours (blue sky, brick / beige buildings, bright green
  trees, red / blue / yellow cars) versus muted camera colours (pale hazy sky, dull brick,
  sandstone and grey concrete, darker duller trees, grey / black / white cars). Each class moves
  differently, so a per-channel normalisation or any global colour transform cannot undo it;
* textures: structured procedural textures in the source (brick joints and floor stripes on
  buildings, pavement tiles, crisp lane markings, leaf speckle, mown grass stripes) versus smooth
  surfaces with low-frequency mottling in the target;
* object appearance: boxy cars with bright tail lights versus rounded cars with dim lights; blue
  glass versus near-black glass in windows;
* lighting and sensor: the target is darker and less saturated, hazy with depth (far things fade
  towards a pale haze colour), vignetted, blurred and noisy;
* class frequencies: more cars, trucks and buses in the source; more persons and riders in the
  target; an ego-car hood (labelId 1, ignored) in most target images and a thin unlabeled band
  (labelId 0) at the bottom of some source images.

Intended difficulty: a small source-trained CNN reaches roughly 30-60 % of the target oracle's
mIoU, leaving a gap for feature alignment / self-training. Measured once on the default set (a
7-layer dilated CNN trained from scratch, 500 Adam steps of 8 whole images, source normalisation
statistics): source-only 25.0 mIoU on target val versus 50.2 for the target-trained oracle; sky,
road, vegetation transfer well, persons, riders and two-wheelers not at all. Rendering one
128×64 image takes about 15 ms (vectorised masks on coordinate grids, no per-pixel loops).
Determinism: image i of a (domain, split) is drawn from `default_rng([seed, domain, split, i])`, so
files are byte-identical for the same arguments and do not depend on the other counts.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from spcl.data.labels import CLASSES_19, LABELIDS_19, cityscapes_labelid_palette

logger = logging.getLogger("spcl")

TOY_VERSION = "toy-v1"  # bump on any change to the drawing code (style changes are fingerprinted)
MANIFEST_NAME = "toy_manifest.json"
TRAIN_CITIES = ("toytown", "mockburg")
VAL_CITIES = ("valville",)
ID = dict(zip(CLASSES_19, LABELIDS_19))  # class name -> Cityscapes labelId
UNLABELED_ID, EGO_VEHICLE_ID = 0, 1      # Cityscapes void labelIds (→ 255 as trainIds)
DRAWN_CLASSES = tuple(c for c in CLASSES_19 if c != "train")  # every class the generator draws
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class DomainStyle:
    """Everything that differs between the two domains; the geometry priors are shared.

    Colours are RGB in 0..255 before lighting; `colours` gives candidate base colours of each class
    (one is drawn per instance). Ranges `(lo, hi)` are inclusive counts per image.
    """

    name: str
    colours: dict[str, tuple[RGB, ...]]
    sky: tuple[RGB, RGB]            # sky colour at the top of the image and at the horizon
    window: RGB                     # building windows / vehicle glass
    car_shape: str                  # "boxy" (simulator) or "round" (camera)
    structured_textures: bool       # bricks, floor stripes, tiles, crisp markings, leaf speckle
    marking_colour: RGB             # lane markings
    stain: float                    # amplitude of low-frequency mottling (fraction of the colour)
    colour_jitter: float            # per-instance multiplicative colour jitter (std)
    brightness: float               # global gain
    saturation: float               # 1 keeps colours, 0 makes them grey
    haze: float                     # largest blend towards `haze_colour` (reached far away)
    haze_colour: RGB
    haze_depth: float               # metres at which the haze reaches 63 % of `haze`
    vignette: float                 # relative darkening in the corners
    blur_sigma: float               # Gaussian blur, pixels at 128 px width (scaled with width)
    noise_std: float                # sensor noise, 0..255 units
    num_cars: tuple[int, int]
    num_persons: tuple[int, int]
    num_bicycles: tuple[int, int]   # parked bicycles
    num_poles: tuple[int, int]
    num_trees: tuple[int, int]
    p_rider: float                  # per image: a rider on a bicycle / motorcycle (up to two)
    p_motorcycle: float             # a rider's vehicle is a motorcycle (else a bicycle); also parked ones
    p_truck: float
    p_bus: float
    p_light: float                  # per pole: a traffic light on top
    p_sign: float                   # per pole: a sign
    p_wall: float                   # per side
    p_fence: float                  # per side
    p_terrain: float                # per side: a grass strip between sidewalk and facades
    p_hood: float                   # ego-car hood (labelId 1) at the bottom
    p_void_band: float              # thin unlabeled band (labelId 0) at the bottom


SOURCE_STYLE = DomainStyle(
    name="simulator",
    colours={
        "road": ((96, 86, 104), (84, 78, 94), (108, 96, 110)), "sidewalk": ((178, 160, 168), (186, 150, 138)),
        "building": ((172, 86, 64), (206, 182, 138), (214, 142, 112), (196, 170, 88)),
        "wall": ((206, 194, 168), (168, 150, 130)), "fence": ((128, 96, 70), (150, 152, 166)),
        "pole": ((92, 92, 100),), "light": ((40, 40, 40),),
        "sign": ((30, 90, 210), (210, 40, 40), (232, 200, 30)),
        "vegetation": ((58, 164, 48), (86, 176, 40)), "terrain": ((150, 190, 78), (168, 164, 96)),
        "person_top": ((220, 40, 40), (40, 90, 220), (240, 200, 40), (240, 240, 240)),
        "person_bottom": ((40, 40, 120), (60, 60, 60), (200, 180, 140)), "skin": ((226, 180, 150),),
        "car": ((205, 30, 30), (30, 60, 205), (232, 200, 40), (242, 242, 242), (40, 160, 60), (64, 64, 70)),
        "truck": ((222, 120, 30), (204, 204, 214)), "bus": ((232, 180, 30), (205, 40, 40)),
        "bicycle": ((190, 30, 30), (30, 30, 30)), "motorcycle": ((30, 30, 30), (60, 60, 200)),
        "hood": ((30, 30, 35),),
    },
    sky=((70, 130, 228), (172, 206, 248)), window=(44, 70, 112), car_shape="boxy",
    structured_textures=True, marking_colour=(245, 245, 245), stain=0.0, colour_jitter=0.06,
    brightness=1.05, saturation=1.0, haze=0.08, haze_colour=(200, 220, 250), haze_depth=120.0,
    vignette=0.0, blur_sigma=0.0, noise_std=2.0,
    num_cars=(3, 9), num_persons=(0, 3), num_bicycles=(0, 1), num_poles=(1, 4), num_trees=(0, 2),
    p_rider=0.3, p_motorcycle=0.35, p_truck=0.45, p_bus=0.35, p_light=0.35, p_sign=0.6,
    p_wall=0.4, p_fence=0.4, p_terrain=0.45, p_hood=0.0, p_void_band=0.5,
)

TARGET_STYLE = DomainStyle(
    name="camera",
    colours={
        "road": ((88, 86, 92), (80, 80, 86)), "sidewalk": ((150, 140, 145), (150, 135, 125)),
        "building": ((150, 100, 85), (170, 160, 140), (120, 116, 120)),
        "wall": ((170, 165, 150), (140, 135, 125)), "fence": ((115, 100, 85), (120, 122, 130)),
        "pole": ((116, 116, 110),), "light": ((30, 32, 30),), "sign": ((196, 176, 64), (42, 80, 150)),
        "vegetation": ((70, 120, 50), (80, 125, 45)), "terrain": ((130, 158, 80), (142, 146, 94)),
        "person_top": ((60, 60, 70), (150, 50, 50), (60, 80, 150), (200, 200, 200)),
        "person_bottom": ((40, 40, 80), (60, 60, 60)), "skin": ((180, 140, 120),),
        "car": ((150, 40, 40), (50, 60, 130), (180, 180, 185), (60, 62, 66), (200, 200, 202)),
        "truck": ((190, 120, 60), (170, 170, 175)), "bus": ((190, 60, 50), (200, 170, 60)),
        "bicycle": ((40, 40, 40), (70, 70, 90)), "motorcycle": ((20, 20, 20), (120, 120, 130)),
        "hood": ((26, 30, 36),),
    },
    sky=((104, 152, 226), (186, 208, 240)), window=(36, 40, 48), car_shape="round",
    structured_textures=False, marking_colour=(150, 150, 146), stain=0.06, colour_jitter=0.08,
    brightness=0.95, saturation=0.85, haze=0.25, haze_colour=(200, 212, 232), haze_depth=80.0,
    vignette=0.15, blur_sigma=0.5, noise_std=4.0,
    num_cars=(1, 5), num_persons=(2, 8), num_bicycles=(0, 2), num_poles=(1, 4), num_trees=(0, 3),
    p_rider=0.6, p_motorcycle=0.25, p_truck=0.15, p_bus=0.15, p_light=0.4, p_sign=0.6,
    p_wall=0.35, p_fence=0.45, p_terrain=0.55, p_hood=0.85, p_void_band=0.0,
)


class _Scene:
    """Canvas (labelIds, colour, depth) plus a pinhole camera over a flat street; draws one image."""

    def __init__(self, rng: np.random.Generator, style: DomainStyle, width: int, height: int):
        self.rng, self.style, self.w, self.h = rng, style, width, height
        # Pixel-centre coordinate grids, H×W: every mask below is a vectorised test on them.
        self.xx, self.yy = np.meshgrid(np.arange(width, dtype=np.float32) + 0.5,
                                       np.arange(height, dtype=np.float32) + 0.5)
        self.label = np.full((height, width), ID["sky"], np.uint8)
        self.rgb = np.zeros((height, width, 3), np.float32)
        self.depth = np.full((height, width), 1e4, np.float32)
        self.f = 0.8 * width                               # focal length, pixels
        self.cam_h = 1.6                                   # camera height, metres
        self.vx = width * (0.5 + rng.uniform(-0.08, 0.08))  # vanishing point
        self.yh = height * rng.uniform(0.36, 0.48)          # horizon row
        self.noise = self._value_noise(max(2, width // 16))  # low-frequency mottling, in [-1, 1]

    # ---- helpers ---------------------------------------------------------------------------
    def _value_noise(self, cell: int) -> np.ndarray:
        """Bilinearly interpolated random grid, H×W in [-1, 1]."""
        g = self.rng.uniform(-1, 1, (self.h // cell + 2, self.w // cell + 2))
        u, v = self.xx / cell, self.yy / cell
        i, j = v.astype(int), u.astype(int)
        fy, fx = v - i, u - j
        top = g[i, j] * (1 - fx) + g[i, j + 1] * fx
        return top * (1 - fy) + (g[i + 1, j] * (1 - fx) + g[i + 1, j + 1] * fx) * fy

    def colour(self, key: str) -> np.ndarray:
        """A base colour of `key` for one instance, with multiplicative jitter."""
        options = self.style.colours[key]
        base = np.array(options[self.rng.integers(len(options))], np.float32)
        return base * (1 + self.rng.normal(0, self.style.colour_jitter))

    def paint(self, mask: np.ndarray, label_id: int, colour, depth) -> None:
        """Paint `mask` with a labelId, a colour (3 or H×W×3) and a depth (scalar or H×W)."""
        self.label[mask] = label_id
        colour, depth = np.asarray(colour, np.float32), np.asarray(depth, np.float32)
        self.rgb[mask] = colour[mask] if colour.ndim == 3 else colour
        self.depth[mask] = depth[mask] if depth.ndim == 2 else depth

    def rect(self, cx: float, half_w: float, y0: float, y1: float) -> np.ndarray:
        """Axis-aligned box, at least one pixel wide and tall (so far / thin things never vanish)."""
        half_w, hh, cy = max(half_w, 0.5), max((y1 - y0) / 2, 0.5), (y0 + y1) / 2
        return (np.abs(self.xx - cx) <= half_w) & (np.abs(self.yy - cy) <= hh)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        rx, ry = max(rx, 0.6), max(ry, 0.6)
        return ((self.xx - cx) / rx) ** 2 + ((self.yy - cy) / ry) ** 2 <= 1

    def project(self, x: float, z: float) -> tuple[float, float, float]:
        """Ground point (lateral x, depth z) in metres → (column, row, pixels per metre)."""
        s = self.f / z
        return self.vx + x * s, self.yh + self.cam_h * s, s

    # ---- background ------------------------------------------------------------------------
    def draw_background(self) -> None:
        st, rng, yy = self.style, self.rng, self.yy
        t = np.clip(yy / max(self.yh, 1), 0, 1)[..., None]
        self.rgb = (1 - t) * np.array(st.sky[0], np.float32) + t * np.array(st.sky[1], np.float32)
        # Distant skyline: blocks of buildings / trees just above the horizon.
        edges = np.cumsum(rng.uniform(0.06, 0.2, 12)) * self.w
        seg = np.searchsorted(edges, self.xx)
        tops = rng.uniform(0.02, 0.1, 13) * self.h
        is_veg = rng.random(13) < 0.35
        band = (yy > self.yh - tops[seg]) & (yy <= self.yh + 1)
        for veg in (False, True):
            key = "vegetation" if veg else "building"
            self.paint(band & (is_veg[seg] == veg), ID[key], self.colour(key), 300.0)
        # Ground plane: road, sidewalks, grass strips, grass beyond.
        below = yy > self.yh
        z = np.where(below, self.f * self.cam_h / np.maximum(yy - self.yh, 1e-3), 1e4)
        x = (self.xx - self.vx) * z / self.f
        centre, half = rng.uniform(-1.5, 1.5), rng.uniform(3.5, 7.0)
        self.road = (centre - half, centre + half)
        sw = rng.uniform(1.5, 3.5, 2)
        grass = np.where(rng.random(2) < st.p_terrain, rng.uniform(1.0, 4.0, 2), 0.0)
        self.walk_out = (centre - half - sw[0], centre + half + sw[1])  # outer sidewalk edges
        self.facade_x = (self.walk_out[0] - grass[0], self.walk_out[1] + grass[1])
        road_m = below & (np.abs(x - centre) < half)
        walk_m = below & ~road_m & (x > self.walk_out[0]) & (x < self.walk_out[1])
        self.paint(below & ~road_m & ~walk_m, ID["terrain"], self._ground_tex("terrain", x, z), z)
        self.paint(walk_m, ID["sidewalk"], self._ground_tex("sidewalk", x, z), z)
        self.paint(road_m, ID["road"], self._ground_tex("road", x, z, centre, half), z)
        for side in (0, 1):
            self._draw_facades(side)

    def _ground_tex(self, key: str, x, z, centre: float = 0.0, half: float = 0.0) -> np.ndarray:
        st, col = self.style, self.colour(key)
        shade = np.ones_like(x)
        if st.structured_textures and key == "sidewalk":
            shade -= 0.18 * ((x % 1.0 < 0.08) | (z % 1.0 < 0.08))
        if st.structured_textures and key == "terrain":
            shade += 0.1 * (z % 3.0 < 1.5)
        out = col * shade[..., None]
        if key == "road":  # dashed centre line and solid edge lines (present in both domains)
            dashed = (np.abs(x - centre) < 0.08) & (z % 6.0 < 3.0)
            edge = np.abs(np.abs(x - centre) - (half - 0.3)) < 0.07
            out = np.where((dashed | edge)[..., None], np.array(st.marking_colour, np.float32), out)
        return out

    def _draw_facades(self, side: int) -> None:
        """Buildings / vegetation on one side: vertical planes parallel to the road, in depth blocks."""
        st, rng, sgn = self.style, self.rng, (-1.0, 1.0)[side]
        dist = abs(self.facade_x[side])
        lateral = sgn * (self.xx - self.vx)
        valid = lateral > 0.05
        z = np.where(valid, self.f * dist / np.maximum(lateral, 1e-3), 1e4)   # depth along the facade
        h = self.cam_h - (self.yy - self.yh) * z / self.f                     # height on the facade
        edges = np.concatenate([[0.0], np.cumsum(rng.uniform(6, 25, 16))])
        n = len(edges) - 1
        kind = rng.choice(3, n, p=[0.62, 0.26, 0.12])                         # building, vegetation, gap
        tops = np.where(kind == 0, rng.uniform(6, 26, n), rng.uniform(3, 10, n))
        seg = np.clip(np.searchsorted(edges, z) - 1, 0, n - 1)
        phase = rng.uniform(0, 6.28)
        top = tops[seg] + np.where(kind[seg] == 1, 1.2 * np.sin(z * 1.7 + phase), 0.0)
        on = valid & (h >= 0) & (h <= top) & (z < edges[-1])
        shade = 0.85 if side == 1 else 1.0  # the sun comes from the left in both domains
        bcols = np.stack([self.colour("building") for _ in range(n)])
        bcol = bcols[seg] * shade
        if st.structured_textures:  # floor stripes and brick joints
            row = np.floor(h / 0.5)
            joints = (h % 0.5 < 0.08) | ((z + 0.5 * (row % 2)) % 1.0 < 0.08)
            bcol = bcol * (1 - 0.22 * (h % 3.0 < 0.4) - 0.12 * joints)[..., None]
        windows = (h > 2.5) & (h % 3.0 > 1.0) & (h % 3.0 < 2.3) & (z % 2.5 > 0.7) & (z % 2.5 < 1.8)
        bcol = np.where(windows[..., None], np.array(st.window, np.float32) * shade, bcol)
        self.paint(on & (kind[seg] == 0), ID["building"], bcol, z)
        vcol = self.colour("vegetation") * shade
        if st.structured_textures:
            vcol = vcol * (1 + 0.25 * rng.uniform(-1, 1, (self.h, self.w, 1)))
        self.paint(on & (kind[seg] == 1), ID["vegetation"], vcol, z)
        for key, p, hi in (("wall", st.p_wall, 2.5), ("fence", st.p_fence, 2.0)):
            if rng.random() >= p:
                continue
            zw = self.f * (dist - 0.3) / np.maximum(lateral, 1e-3)
            hw = self.cam_h - (self.yy - self.yh) * zw / self.f
            z0 = rng.uniform(3, 30)
            m = valid & (zw > z0) & (zw < z0 + rng.uniform(5, 25)) & (hw >= 0) & (hw <= rng.uniform(1.0, hi))
            col = self.colour(key) * shade
            if key == "fence":  # vertical slats / mesh: a shared shape cue
                col = col * (1 - 0.35 * (zw % 0.4 < 0.15))[..., None]
            self.paint(m, ID[key], col, zw)

    # ---- things ----------------------------------------------------------------------------
    def draw_things(self) -> None:
        """Places every object on the ground plane, then paints them far-to-near."""
        st, rng = self.style, self.rng
        (rl, rr), (wl, wr) = self.road, self.walk_out
        items: list[tuple[float, str, float]] = []  # (depth, kind, lateral)

        def z_near_far(lo: float = 4.5, hi: float = 45.0) -> float:
            return lo + (hi - lo) * rng.random() ** 1.4

        for _ in range(rng.integers(st.num_cars[0], st.num_cars[1] + 1)):
            x, z = rng.uniform(rl + 1.0, rr - 1.0), z_near_far(6.0)
            if abs(x) < 1.6 and z < 10:  # keep the lane right in front of the camera clear
                z += 10
            items.append((z, "car", x))
        for kind, p in (("truck", st.p_truck), ("bus", st.p_bus)):
            if rng.random() < p:
                items.append((z_near_far(10.0, 50.0), kind, rng.uniform(rl + 1.5, rr - 1.5)))
        for _ in range(rng.integers(st.num_persons[0], st.num_persons[1] + 1)):
            on_road = rng.random() < 0.2
            x = rng.uniform(rl, rr) if on_road else rng.choice([rng.uniform(wl + 0.3, rl - 0.3),
                                                                rng.uniform(rr + 0.3, wr - 0.3)])
            items.append((z_near_far(4.0, 35.0), "person", x))
        for _ in range(2 if rng.random() < st.p_rider * 0.4 else int(rng.random() < st.p_rider)):
            vehicle = "motorcycle" if rng.random() < st.p_motorcycle else "bicycle"
            on_lane = vehicle == "motorcycle"
            x = rng.uniform(rl + 0.5, rr - 0.5) if on_lane else rng.choice([rl + 0.6, rr - 0.6])
            items.append((z_near_far(5.0, 35.0), "rider_" + vehicle, x))
        for _ in range(rng.integers(st.num_bicycles[0], st.num_bicycles[1] + 1)):
            vehicle = "motorcycle" if rng.random() < st.p_motorcycle else "bicycle"
            items.append((z_near_far(4.0, 30.0), vehicle, rng.choice([wl + 0.5, wr - 0.5])))
        for _ in range(rng.integers(st.num_poles[0], st.num_poles[1] + 1)):
            items.append((z_near_far(5.0, 60.0), "pole", rng.choice([rl - 0.4, rr + 0.4])))
        for _ in range(rng.integers(st.num_trees[0], st.num_trees[1] + 1)):
            items.append((z_near_far(5.0, 50.0), "tree", rng.choice([wl + 0.6, wr - 0.6])))
        for z, kind, x in sorted(items, key=lambda it: -it[0]):
            getattr(self, "_draw_" + kind.split("_")[0])(x, z, kind)

    def _draw_car(self, x: float, z: float, kind: str) -> None:
        cx, base, s = self.project(x, z)
        body, win, lid = self.colour("car"), np.array(self.style.window, np.float32), ID["car"]
        if self.style.car_shape == "boxy":
            self.paint(self.rect(cx, 0.72 * s, base - 1.45 * s, base - 0.9 * s), lid, body, z)
            self.paint(self.rect(cx, 0.6 * s, base - 1.38 * s, base - 1.0 * s), lid, win, z)
        else:
            cabin = self.ellipse(cx, base - 0.95 * s, 0.72 * s, 0.52 * s) & (self.yy < base - 0.9 * s)
            self.paint(cabin, lid, body, z)
            glass = self.ellipse(cx, base - 0.97 * s, 0.55 * s, 0.38 * s) & (self.yy < base - 0.98 * s)
            self.paint(glass, lid, win, z)
        self.paint(self.rect(cx, 0.9 * s, base - 0.95 * s, base - 0.25 * s), lid, body, z)
        lamp = (250, 30, 30) if self.style.car_shape == "boxy" else (120, 30, 30)
        for sx in (-1, 1):
            self.paint(self.rect(cx + sx * 0.7 * s, 0.15 * s, base - 0.85 * s, base - 0.7 * s), lid,
                       np.array(lamp, np.float32), z)
            self.paint(self.rect(cx + sx * 0.7 * s, 0.16 * s, base - 0.3 * s, base), lid,
                       np.array((25, 25, 25), np.float32), z)

    def _draw_truck(self, x: float, z: float, kind: str) -> None:
        cx, base, s = self.project(x, z)
        lid = ID[kind]
        dims = (1.25, 3.4, 0.55) if kind == "truck" else (1.3, 3.1, 0.3)
        box = self.rect(cx, dims[0] * s, base - dims[1] * s, base - dims[2] * s)
        self.paint(box, lid, self.colour(kind), z)
        chassis = self.rect(cx, dims[0] * 0.9 * s, base - 0.6 * s, base)
        self.paint(chassis, lid, np.array((30, 30, 30), np.float32), z)
        if kind == "bus":  # window band
            self.paint(self.rect(cx, 1.2 * s, base - 2.7 * s, base - 1.8 * s), lid,
                       np.array(self.style.window, np.float32), z)

    _draw_bus = _draw_truck

    def _draw_person(self, x: float, z: float, kind: str, lift: float = 0.0) -> None:
        cx, base, s = self.project(x, z)
        lid = ID["rider"] if kind.startswith("rider") else ID["person"]
        base = base - lift * s
        stride = self.rng.uniform(0.0, 0.12) * s
        if lift == 0.0:
            bottom = self.colour("person_bottom")
            self.paint(self.rect(cx - 0.1 * s - stride, 0.08 * s, base - 0.85 * s, base), lid, bottom, z)
            self.paint(self.rect(cx + 0.1 * s + stride, 0.08 * s, base - 0.85 * s, base), lid, bottom, z)
        self.paint(self.ellipse(cx, base - 1.15 * s, 0.24 * s, 0.36 * s), lid, self.colour("person_top"), z)
        self.paint(self.ellipse(cx, base - 1.6 * s, 0.12 * s, 0.13 * s), lid, self.colour("skin"), z)

    def _draw_rider(self, x: float, z: float, kind: str) -> None:
        self._draw_bicycle(x, z, kind.split("_")[1])
        self._draw_person(x, z - 0.05, kind, lift=0.55)

    def _draw_bicycle(self, x: float, z: float, kind: str) -> None:
        """Side view: two wheels (rings where large enough) and a frame; also motorcycles."""
        kind = "motorcycle" if kind.endswith("motorcycle") else "bicycle"
        cx, base, s = self.project(x, z)
        lid, col = ID[kind], self.colour(kind)
        r = (0.34 if kind == "bicycle" else 0.32) * s
        for sx in (-1, 1):
            ring = self.ellipse(cx + sx * 0.55 * s, base - r, r, r)
            if r > 3:
                inner = r - max(1.0, 0.2 * r)
                ring &= ~self.ellipse(cx + sx * 0.55 * s, base - r, inner, inner)
            self.paint(ring, lid, col, z)
        frame_h = (0.12 if kind == "bicycle" else 0.3) * s
        self.paint(self.rect(cx, 0.5 * s, base - r - frame_h, base - r + frame_h), lid, col, z)

    _draw_motorcycle = _draw_bicycle

    def _draw_pole(self, x: float, z: float, kind: str) -> None:
        cx, base, s = self.project(x, z)
        height = self.rng.uniform(4.0, 7.5)
        self.paint(self.rect(cx, 0.08 * s, base - height * s, base), ID["pole"], self.colour("pole"), z)
        if self.rng.random() < self.style.p_sign:
            y = base - self.rng.uniform(2.2, 3.2) * s
            plate = self.rect(cx, 0.35 * s, y - 0.3 * s, y + 0.3 * s)
            self.paint(plate, ID["sign"], self.colour("sign"), z - 0.05)
        if self.rng.random() < self.style.p_light:
            y = base - height * s
            self.paint(self.rect(cx, 0.18 * s, y, y + 0.9 * s), ID["light"], self.colour("light"), z - 0.05)
            lamp = np.array((60, 220, 80) if self.rng.random() < 0.5 else (230, 40, 30), np.float32)
            self.paint(self.rect(cx, 0.08 * s, y + 0.3 * s, y + 0.45 * s), ID["light"], lamp, z - 0.06)

    def _draw_tree(self, x: float, z: float, kind: str) -> None:
        cx, base, s = self.project(x, z)
        col, lid = self.colour("vegetation"), ID["vegetation"]
        self.paint(self.rect(cx, 0.15 * s, base - 3.0 * s, base), lid, np.array((80, 60, 40), np.float32), z)
        r = self.rng.uniform(1.3, 2.4)
        crown = col
        if self.style.structured_textures:  # leaf speckle
            crown = col * (1 + 0.25 * self.rng.uniform(-1, 1, (self.h, self.w, 1)))
        self.paint(self.ellipse(cx, base - (3.0 + r) * s, r * s, 1.1 * r * s), lid, crown, z)

    # ---- ignored pixels, lighting and sensor -----------------------------------------------
    def draw_void(self) -> None:
        st, rng = self.style, self.rng
        if rng.random() < st.p_hood:
            hh = rng.uniform(0.06, 0.11) * self.h
            bulge = ((self.xx - self.w / 2) / (0.75 * self.w)) ** 2
            hood = self.yy > self.h - hh * (1 - bulge)
            sheen = 1 + 0.5 * np.exp(-((self.xx - self.w / 2) / (0.2 * self.w)) ** 2)
            self.paint(hood, EGO_VEHICLE_ID, self.colour("hood") * sheen[..., None], 0.5)
        if rng.random() < st.p_void_band:
            self.label[self.yy > self.h - rng.integers(1, 3)] = UNLABELED_ID

    def finish(self) -> np.ndarray:
        """Lighting, haze, vignette, blur and sensor noise; returns the H×W×3 uint8 image."""
        st, rng = self.style, self.rng
        rgb = self.rgb * (1 + st.stain * self.noise)[..., None]
        grey = rgb.mean(-1, keepdims=True)
        rgb = (grey + st.saturation * (rgb - grey)) * st.brightness
        a = (st.haze * (1 - np.exp(-self.depth / st.haze_depth)))[..., None]
        rgb = rgb * (1 - a) + np.array(st.haze_colour, np.float32) * a
        r2 = ((self.xx / self.w - 0.5) ** 2 + (self.yy / self.h - 0.5) ** 2) * 2
        rgb = rgb * (1 - st.vignette * r2)[..., None]
        sigma = st.blur_sigma * self.w / 128
        if sigma > 0:
            rgb = _gaussian_blur(rgb, sigma)
        if st.noise_std > 0:
            rgb = rgb + rng.normal(0, st.noise_std, rgb.shape)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an H×W×C array with edge padding."""
    r = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    for axis in (0, 1):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (r, r)
        p = np.pad(img, pad, mode="edge")
        n = img.shape[axis]
        img = sum(w * np.take(p, np.arange(i, i + n), axis=axis) for i, w in enumerate(k))
    return img


def render_scene(rng: np.random.Generator, style: DomainStyle, size: tuple[int, int] = (128, 64)
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Draws one street scene.

    Args:
        rng: the image's own generator (the whole image is a function of its state).
        style: the domain's appearance (`SOURCE_STYLE` or `TARGET_STYLE`).
        size: (width, height) in pixels.

    Returns:
        (image H×W×3 uint8 RGB, label H×W uint8 Cityscapes labelIds).
    """
    scene = _Scene(rng, style, int(size[0]), int(size[1]))
    scene.draw_background()
    scene.draw_things()
    scene.draw_void()
    return scene.finish(), scene.label


def _planned_files(root: Path, num_source: int, num_target_train: int, num_target_val: int
                   ) -> list[tuple[DomainStyle, tuple[int, int, int], Path, Path]]:
    """Every image to write: (style, (domain, split, index) seed key, image path, label path)."""
    plan = []
    for i in range(num_source):
        name = f"{i + 1:05d}.png"
        gta = root / "gta5"
        plan.append((SOURCE_STYLE, (0, 0, i), gta / "images" / name, gta / "labels" / name))
    splits = (("train", 0, num_target_train, TRAIN_CITIES), ("val", 1, num_target_val, VAL_CITIES))
    for split, code, n, cities in splits:
        per_city = -(-n // len(cities)) if n else 1
        for i in range(n):
            city, frame = cities[i // per_city], i % per_city
            stem = f"{city}_000000_{frame:06d}"
            plan.append((TARGET_STYLE, (1, code, i),
                         root / "cityscapes" / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                         root / "cityscapes" / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"))
    return plan


def generate_toy_dataset(root: str | os.PathLike, seed: int = 0, num_source: int = 200,
                         num_target_train: int = 200, num_target_val: int = 50,
                         size: tuple[int, int] = (128, 64), overwrite: bool = False) -> dict:
    """Writes the toy source (GTA5 layout) and target (Cityscapes layout) datasets under `root`.

    A no-op when `root/toy_manifest.json` records the same arguments, `TOY_VERSION` and style
    fingerprint (a hash of `SOURCE_STYLE` and `TARGET_STYLE`) and every file exists, so
    callers may call it every time. Otherwise (or with `overwrite=True`) the `gta5/` and
    `cityscapes/` folders of an earlier toy generation are deleted and written again. Folders with
    those names that were not made by this function (no manifest) are never deleted.

    Args:
        root: output folder (created if missing).
        seed: base seed; image i of a (domain, split) uses `default_rng([seed, domain, split, i])`.
        num_source: source images, `gta5/images/NNNNN.png` + palette labels `gta5/labels/NNNNN.png`.
        num_target_train: target train images, split over the cities `TRAIN_CITIES`.
        num_target_val: target val images, in `VAL_CITIES`.
        size: (width, height) in pixels.
        overwrite: regenerate even when the manifest matches.

    Returns:
        dict with `root`, `generated` (False for a no-op), the three counts, `size`, the `gta5` and
        `cityscapes` folders and the `manifest` path.
    """
    root = Path(root)
    width, height = (int(v) for v in size)
    counts = {"num_source": num_source, "num_target_train": num_target_train,
              "num_target_val": num_target_val}
    if seed < 0 or min(counts.values()) < 0:
        raise ValueError(f"seed and counts must be non-negative, got seed={seed} {counts}")
    if width < 16 or height < 8:
        raise ValueError(f"size must be at least (16, 8) (width, height), got {tuple(size)}")
    styles = hashlib.sha256(repr((SOURCE_STYLE, TARGET_STYLE)).encode()).hexdigest()[:16]
    manifest = {"version": TOY_VERSION, "styles": styles, "seed": int(seed),
                **{k: int(v) for k, v in counts.items()}, "size": [width, height]}
    manifest_path = root / MANIFEST_NAME
    plan = _planned_files(root, num_source, num_target_train, num_target_val)
    info = {"root": str(root), **counts, "size": [width, height], "gta5": str(root / "gta5"),
            "cityscapes": str(root / "cityscapes"), "manifest": str(manifest_path)}

    old = None
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            old = {}
    if (not overwrite and old is not None and old.get("complete") and
            {k: v for k, v in old.items() if k != "complete"} == manifest and
            all(img.is_file() and lab.is_file() for *_, img, lab in plan)):
        logger.info("toy dataset in %s is up to date (%s)", root, manifest)
        return {**info, "generated": False}
    for sub in ("gta5", "cityscapes"):
        if (root / sub).exists():
            if old is None:
                raise FileExistsError(f"{root / sub} exists but {manifest_path} does not: refusing to "
                                      "overwrite a folder that generate_toy_dataset did not create")
            shutil.rmtree(root / sub)

    root.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps({**manifest, "complete": False}, indent=2) + "\n")
    palette = cityscapes_labelid_palette()
    for style, key, img_path, lab_path in plan:
        rng = np.random.default_rng([int(seed), *key])
        image, label = render_scene(rng, style, (width, height))
        img_path.parent.mkdir(parents=True, exist_ok=True)
        lab_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "RGB").save(img_path)
        if key[0] == 0:  # GTA5: palette PNG whose indices are labelIds
            lab_img = Image.fromarray(label, "P")
            lab_img.putpalette(palette)
            lab_img.save(lab_path)
        else:            # Cityscapes: grey PNG of labelIds
            Image.fromarray(label, "L").save(lab_path)
    manifest_path.write_text(json.dumps({**manifest, "complete": True}, indent=2) + "\n")
    logger.info("wrote toy dataset to %s: %d source, %d target train, %d target val images at %dx%d",
                root, num_source, num_target_train, num_target_val, width, height)
    return {**info, "generated": True}
