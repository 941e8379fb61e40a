"""Exact sphere-box contacts for MJX, so contacts inside the geom margin activate as in MuJoCo C.

MJX (mujoco-mjx 3.x) collides a sphere with a box through its generic sphere-convex routine, which reports no
contact (``dist = 1``) as soon as one box face separates the sphere. Contacts whose distance lies in
``[0, margin)`` are then never created, while MuJoCo C creates them and starts pushing back once
``dist < margin``. In PointMaze (margin 0.002 per geom) the two engines agree to 1e-7 in free motion but part ways
when the ball grazes a wall corner. This module computes the exact sphere-box distance (closest point of the box,
found by clamping the sphere centre in the box frame) and registers it for MJX's (sphere, box) pair.
"""

from __future__ import annotations

import jax.numpy as jnp
from mujoco.mjx._src import collision_convex, collision_driver
from mujoco.mjx._src import math as mjx_math
from mujoco.mjx._src.types import GeomType


def sphere_box_contact(sphere, box):
    """``(dist, pos, frame)`` of the contact between a sphere (geom 1) and a box (geom 2), normal from 1 to 2.

    Outside the box the normal points from the sphere centre to its closest box point; inside, the sphere
    leaves through the face of least depth.
    """
    center = box.mat.T @ (sphere.pos - box.pos)
    half = box.size
    closest = jnp.clip(center, -half, half)
    offset = closest - center
    gap = jnp.linalg.norm(offset)
    outside = gap > 1e-9
    depth = half - jnp.abs(center)
    axis = jnp.argmin(depth)
    direction = jnp.sign(center[axis])
    inside_normal = -jnp.zeros(3).at[axis].set(jnp.where(direction == 0, 1.0, direction))
    normal = jnp.where(outside, offset / jnp.where(outside, gap, 1.0), inside_normal)
    distance = jnp.where(outside, gap, -depth[axis]) - sphere.size[0]
    surface = jnp.where(outside, closest, center - inside_normal * depth[axis])
    pos = 0.5 * (surface + center + normal * sphere.size[0])
    normal = box.mat @ normal
    return distance, box.mat @ pos + box.pos, mjx_math.make_frame(normal)


def use_exact_sphere_box_contacts() -> None:
    """Register :func:`sphere_box_contact` for MJX's (sphere, box) pair (idempotent)."""
    collision_driver._COLLISION_FUNC[(GeomType.SPHERE, GeomType.BOX)] = collision_convex.collider(ncon=1)(
        sphere_box_contact
    )
