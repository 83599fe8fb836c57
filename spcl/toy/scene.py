"""The renderer of the toy shift: one street scene (labelIds, colour, depth) drawn on coordinate
grids with a pinhole camera, in the look of a `DomainStyle`. Called by `writer.py`."""
from __future__ import annotations

import numpy as np

from .styles import EGO_VEHICLE_ID, FOCAL, ID, UNLABELED_ID, DomainStyle


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
        self.f = FOCAL * width                             # focal length, pixels
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
            items.append((z_near_far(4.0, 22.0), "person", x))
        for _ in range(2 if rng.random() < st.p_rider * 0.4 else int(rng.random() < st.p_rider)):
            vehicle = "motorcycle" if rng.random() < st.p_motorcycle else "bicycle"
            on_lane = vehicle == "motorcycle"
            x = rng.uniform(rl + 0.5, rr - 0.5) if on_lane else rng.choice([rl + 0.6, rr - 0.6])
            items.append((z_near_far(4.5, 22.0), "rider_" + vehicle, x))
        for _ in range(rng.integers(st.num_bicycles[0], st.num_bicycles[1] + 1)):
            vehicle = "motorcycle" if rng.random() < st.p_motorcycle else "bicycle"
            items.append((z_near_far(4.0, 18.0), vehicle, rng.choice([wl + 0.5, wr - 0.5])))
        for _ in range(rng.integers(st.num_poles[0], st.num_poles[1] + 1)):
            items.append((z_near_far(4.0, 25.0), "pole", rng.choice([rl - 0.6, rr + 0.6])))
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
            self.paint(self.rect(cx - 0.14 * s - stride, 0.13 * s, base - 0.85 * s, base), lid, bottom, z)
            self.paint(self.rect(cx + 0.14 * s + stride, 0.13 * s, base - 0.85 * s, base), lid, bottom, z)
        self.paint(self.ellipse(cx, base - 1.2 * s, 0.36 * s, 0.45 * s), lid, self.colour("person_top"), z)
        self.paint(self.ellipse(cx, base - 1.75 * s, 0.17 * s, 0.18 * s), lid, self.colour("skin"), z)

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
            if r > 4:
                inner = r - max(1.5, 0.35 * r)
                ring &= ~self.ellipse(cx + sx * 0.55 * s, base - r, inner, inner)
            self.paint(ring, lid, col, z)
        frame_h = (0.2 if kind == "bicycle" else 0.32) * s
        self.paint(self.rect(cx, 0.5 * s, base - r - frame_h, base - r + frame_h), lid, col, z)

    _draw_motorcycle = _draw_bicycle

    def _draw_pole(self, x: float, z: float, kind: str) -> None:
        cx, base, s = self.project(x, z)
        height = self.rng.uniform(4.0, 7.5)
        self.paint(self.rect(cx, 0.22 * s, base - height * s, base), ID["pole"], self.colour("pole"), z)
        if self.rng.random() < self.style.p_sign:
            y = base - self.rng.uniform(2.2, 3.2) * s
            plate = self.rect(cx, 0.6 * s, y - 0.5 * s, y + 0.5 * s)
            self.paint(plate, ID["sign"], self.colour("sign"), z - 0.05)
        if self.rng.random() < self.style.p_light:
            y = base - height * s
            self.paint(self.rect(cx, 0.4 * s, y, y + 1.6 * s), ID["light"], self.colour("light"), z - 0.05)
            lamp = np.array((60, 220, 80) if self.rng.random() < 0.5 else (230, 40, 30), np.float32)
            self.paint(self.rect(cx, 0.2 * s, y + 0.5 * s, y + 0.8 * s), ID["light"], lamp, z - 0.06)

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
