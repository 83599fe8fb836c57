"""A deterministic toy street-scene domain-shift dataset: a tiny GTA5 → Cityscapes stand-in.

`generate_toy_dataset` (writer.py) writes a "simulator" source in the GTA5 layout and a "camera" target in the
Cityscapes layout (docs/method.md "Datasets"), small enough that the whole SPCL pipeline runs on a CPU in minutes.
Called by `tools/make_toy.py`, `tools/train.py` (configs with DATASETS.TOY.GENERATE), the
benchmarks and the tests; training code never imports this package. Modules: `styles.py` (what
differs between the domains), `scene.py` (the renderer), `writer.py` (folder layouts, manifest).

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

Sizes (toy-v3): street furniture and people are drawn chunkier than life and nearer the camera
(poles 0.44 m wide, sign plates 1.2 × 1.0 m, traffic lights 0.8 × 1.6 m, persons 0.7 m wide,
thick wheels; persons / riders / two-wheelers within 22 m, poles within 25 m), because the model
predicts at stride 8: at 128×64 an object narrower than ~8 px lies inside one feature cell and
cannot be segmented by any method. The camera has the Cityscapes focal length (`styles.FOCAL`, 1.1 ×
the width; toy-v2 had 0.8, a wider view with everything 27 % smaller). A measurable bound:
average-pooling the one-hot labels by 8, upsampling bilinearly and taking the argmax (the best a
stride-8 logit map can do, roughly) gives about 61 mIoU at 128×64, 68 at 160×80, 74 at 192×96 and 79
at 256×128 on the source (toy-v2 at 128×64: 57.7; toy-v1: 50, with pole and light at 0, bicycle 4).
Rendering one 128×64 image takes about 15 ms (vectorised masks on
coordinate grids, no per-pixel loops).
Determinism: image i of a (domain, split) is drawn from `default_rng([seed, domain, split, i])`, so
files are byte-identical for the same arguments and do not depend on the other counts.
"""
from .scene import render_scene
from .styles import (DRAWN_CLASSES, EGO_VEHICLE_ID, ID, SOURCE_STYLE, TARGET_STYLE, TOY_VERSION, UNLABELED_ID,
                     DomainStyle)
from .writer import generate_toy_dataset

__all__ = ["generate_toy_dataset", "render_scene", "DomainStyle", "SOURCE_STYLE", "TARGET_STYLE", "ID",
           "DRAWN_CLASSES", "EGO_VEHICLE_ID", "UNLABELED_ID", "TOY_VERSION"]
