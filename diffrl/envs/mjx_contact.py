"""Exact sphere-box contacts for MJX, so contacts inside the geom margin activate as in MuJoCo C.

MJX (mujoco-mjx 3.x) collides a sphere with a box through its generic sphere-convex routine, which reports no
contact (``dist = 1``) as soon as one box face separates the sphere. Contacts whose distance lies in
``[0, margin)`` are then never created, while MuJoCo C creates them and starts pushing back once
``dist < margin``. In PointMaze (margin 0.002 per geom) the two engines agree to 1e-7 in free motion but part ways
when the ball grazes a wall corner. This module computes the exact sphere-box distance (closest point of the box,
found by clamping the sphere centre in the box frame) and registers it for MJX's (sphere, box) pair.

It patches MJX internals (``collision_driver._COLLISION_FUNC``, ``collision_convex.collider``, ``math.make_frame``,
``types.GeomType``), so :func:`use_exact_sphere_box_contacts` first checks that the installed ``mujoco-mjx`` lies
in :data:`SUPPORTED_MJX_VERSIONS`, the releases whose internals it was written against and that pass the float64
parity test against gymnasium-robotics (``tests/test_envs_pointmaze.py``).
"""

from __future__ import annotations

import functools
import importlib.metadata
import re

import jax.numpy as jnp

SUPPORTED_MJX_VERSIONS = ("3.17.0", "3.18.0")  # [lowest, first unsupported): written and parity-tested on 3.17.0


class UnsupportedMJXError(RuntimeError):
    """The installed ``mujoco-mjx`` is not one whose private collision table this module knows how to patch."""


def sphere_box_contact(sphere, box, make_frame):
    """``(dist, pos, frame)`` of the contact between a sphere (geom 1) and a box (geom 2), normal from 1 to 2.

    Outside the box the normal points from the sphere centre to its closest box point; inside, the sphere
    leaves through the face of least depth. ``make_frame`` is MJX's ``math.make_frame`` (normal -> contact frame).
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
    return distance, box.mat @ pos + box.pos, make_frame(normal)


def _release(version: str) -> tuple[int, int, int] | None:
    """``(major, minor, patch)`` of a version string, ``None`` when it does not start with ``major.minor``."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    return None if match is None else tuple(int(part) for part in match.groups(default="0"))


def _unsupported(installed: str, problem: str) -> UnsupportedMJXError:
    lowest, first_unsupported = SUPPORTED_MJX_VERSIONS
    return UnsupportedMJXError(
        f"diffrl's exact MJX sphere-box contact (diffrl/envs/mjx_contact.py) supports mujoco-mjx >={lowest},"
        f"<{first_unsupported}, but {installed} is installed: {problem}. Install a supported release "
        f"(pip install 'mujoco-mjx>={lowest},<{first_unsupported}'), or port the patch to this release, check that "
        f"tests/test_envs_pointmaze.py passes, and widen SUPPORTED_MJX_VERSIONS."
    )


@functools.cache
def use_exact_sphere_box_contacts() -> None:
    """Register :func:`sphere_box_contact` for MJX's (sphere, box) pair, once per process.

    Later calls do nothing, so a deliberate override made afterwards (the parity script's stock run) stays.
    Raises :class:`UnsupportedMJXError` for an MJX release outside :data:`SUPPORTED_MJX_VERSIONS` or one that
    lacks the private names the patch uses.
    """
    try:
        installed = importlib.metadata.version("mujoco-mjx")
    except importlib.metadata.PackageNotFoundError:
        raise _unsupported("no release", "the mujoco-mjx distribution is not installed") from None
    lowest, first_unsupported = SUPPORTED_MJX_VERSIONS
    release = _release(installed)
    if release is None or not _release(lowest) <= release < _release(first_unsupported):
        raise _unsupported(installed, "its collision internals are untested")
    try:
        from mujoco.mjx._src import collision_convex, collision_driver
        from mujoco.mjx._src.math import make_frame
        from mujoco.mjx._src.types import GeomType

        table, collider = collision_driver._COLLISION_FUNC, collision_convex.collider
        pair = (GeomType.SPHERE, GeomType.BOX)
    except (ImportError, AttributeError) as err:
        raise _unsupported(installed, f"a private MJX name is missing ({err})") from err
    if pair not in table:
        raise _unsupported(installed, "its collision table has no (sphere, box) entry")
    table[pair] = collider(ncon=1)(functools.partial(sphere_box_contact, make_frame=make_frame))
