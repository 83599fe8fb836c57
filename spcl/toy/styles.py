"""The two domains of the toy shift as data: what differs between the "simulator" source and the
"camera" target (`DomainStyle`, `SOURCE_STYLE`, `TARGET_STYLE`) and the constants both share.
See `spcl/toy/__init__.py` for the design of the shift; `scene.py` draws with these styles."""
from __future__ import annotations

from dataclasses import dataclass

from spcl.data.labels import CLASSES_19, LABELIDS_19

TOY_VERSION = "toy-v3"  # bump on any change to the drawing code (style changes are fingerprinted)
MANIFEST_NAME = "toy_manifest.json"
LOCK_NAME = ".toy_lock"  # held while checking / writing, so concurrent callers never race
TRAIN_CITIES = ("toytown", "mockburg")
VAL_CITIES = ("valville",)
ID = dict(zip(CLASSES_19, LABELIDS_19))  # class name -> Cityscapes labelId
UNLABELED_ID, EGO_VEHICLE_ID = 0, 1      # Cityscapes void labelIds (→ 255 as trainIds)
DRAWN_CLASSES = tuple(c for c in CLASSES_19 if c != "train")  # every class the generator draws
RGB = tuple[int, int, int]
# Focal length as a multiple of the image width, shared by both domains: the Cityscapes camera's
# (fx ≈ 2262 px at 2048 px wide, a 49° horizontal field of view). toy-v2 used 0.8 (64°), which drew
# every object 27 % smaller than a Cityscapes frame of the same width would.
FOCAL = 1.1


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
