"""Every drawable thing in the world: the ID classes and the OoD kinds, with how to place them.

`OOD_KINDS` is the public table (name, tier, group); `SPECS` adds what the scene builder needs.
Pool kinds may be used for OoD proxies or outlier exposure in training; test kinds never.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipeline.synth import far_ood, id_objects, near_ood
from pipeline.synth.canvas import Sprite
from pipeline.synth.id_objects import ID_CLASSES

Tier = Literal["near", "far"]
Group = Literal["pool", "test"]
Placement = Literal["ground", "pole", "air"]
Drawer = Callable[[np.random.Generator, float, "float | None"], Sprite]


@dataclass(frozen=True)
class OodKind:
    """One OoD object kind; `resembles` names the ID class a near kind is built to be confused with."""

    name: str
    tier: Tier
    group: Group
    resembles: str | None = None


OOD_KINDS: tuple[OodKind, ...] = (
    # near, pool: one look-alike for each of pedestrian, car and traffic sign
    OodKind("fire_hydrant", "near", "pool", "pedestrian"),
    OodKind("dumpster", "near", "pool", "car"),
    OodKind("billboard", "near", "pool", "traffic sign"),
    # near, test
    OodKind("dog", "near", "test", "pedestrian"),
    OodKind("stroller", "near", "test", "pedestrian"),
    OodKind("shopping_cart", "near", "test", "car"),
    OodKind("bench", "near", "test", "car"),
    OodKind("mailbox", "near", "test", "traffic sign"),
    OodKind("street_clock", "near", "test", "traffic sign"),
    OodKind("traffic_cone", "near", "test", "traffic light"),
    OodKind("lamp_head", "near", "test", "traffic light"),
    # far
    OodKind("star", "far", "pool"),
    OodKind("checkerboard", "far", "pool"),
    OodKind("balloon", "far", "test"),
    OodKind("spiral", "far", "test"),
    OodKind("fruit", "far", "test"),
    OodKind("blob", "far", "test"),
    OodKind("glyph_panel", "far", "test"),
)


@dataclass(frozen=True)
class ObjectSpec:
    """How to draw and place one class or kind.

    `height_px` is the drawn height range at a 320 px image (scaled with the image), sampled
    uniformly: small objects are a detector's hardest case and should not dominate;
    `real_height_m` sets where a ground object stands for its size (a simple pinhole camera).
    """

    name: str
    tier: Literal["id", "near", "far"]
    draw: Drawer
    placement: Placement
    height_px: tuple[float, float]
    real_height_m: float = 1.0


SPECS: dict[str, ObjectSpec] = {
    s.name: s
    for s in (
        # ID minimums keep every ID object learnable by a 0.9M-parameter detector at 320 px:
        # pedestrians >= 36 px tall (~12 px wide), cars >= 20 px, traffic lights >= 36 px long
        # (>= 15 px across), signs >= 24 px; smaller ones were mostly missed (world version 2)
        ObjectSpec("pedestrian", "id", id_objects.pedestrian, "ground", (36, 120), 1.7),
        ObjectSpec("car", "id", id_objects.car, "ground", (20, 60), 1.5),
        ObjectSpec("traffic light", "id", id_objects.traffic_light, "pole", (36, 72)),
        ObjectSpec("traffic sign", "id", id_objects.traffic_sign, "pole", (24, 64)),
        ObjectSpec("fire_hydrant", "near", near_ood.fire_hydrant, "ground", (18, 60), 0.8),
        ObjectSpec("dumpster", "near", near_ood.dumpster, "ground", (16, 60), 1.3),
        ObjectSpec("billboard", "near", near_ood.billboard, "pole", (18, 64)),
        ObjectSpec("dog", "near", near_ood.dog, "ground", (16, 64), 0.65),
        ObjectSpec("stroller", "near", near_ood.stroller, "ground", (18, 70), 1.0),
        ObjectSpec("shopping_cart", "near", near_ood.shopping_cart, "ground", (18, 64), 1.0),
        ObjectSpec("bench", "near", near_ood.bench, "ground", (14, 48), 0.85),
        ObjectSpec("mailbox", "near", near_ood.mailbox, "pole", (18, 56)),
        ObjectSpec("street_clock", "near", near_ood.street_clock, "pole", (16, 56)),
        ObjectSpec("traffic_cone", "near", near_ood.traffic_cone, "ground", (16, 52), 0.7),
        ObjectSpec("lamp_head", "near", near_ood.lamp_head, "pole", (20, 64)),
        ObjectSpec("star", "far", far_ood.star, "air", (20, 80)),
        ObjectSpec("checkerboard", "far", far_ood.checkerboard, "air", (20, 80)),
        ObjectSpec("balloon", "far", far_ood.balloon, "air", (24, 96)),
        ObjectSpec("spiral", "far", far_ood.spiral, "air", (20, 80)),
        ObjectSpec("fruit", "far", far_ood.fruit, "air", (20, 80)),
        ObjectSpec("blob", "far", far_ood.blob, "air", (20, 80)),
        ObjectSpec("glyph_panel", "far", far_ood.glyph_panel, "air", (20, 80)),
    )
}

assert set(SPECS) == set(ID_CLASSES) | {k.name for k in OOD_KINDS}


def ood_kind_names(tier: Tier | None = None, group: Group | None = None) -> tuple[str, ...]:
    """OoD kind names filtered by tier and/or group, in table order."""
    return tuple(k.name for k in OOD_KINDS
                 if (tier is None or k.tier == tier) and (group is None or k.group == group))
