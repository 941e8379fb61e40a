"""MuJoCo C's contacts where MJX differs: exact sphere-box contacts, so that contacts inside the geom margin
activate as in MuJoCo C, and MuJoCo C's plane-capsule contact frames; and a line search that stops when it has
converged, as MuJoCo C's does.

MJX (mujoco-mjx 3.x) collides a sphere with a box through its generic sphere-convex routine, which reports no
contact (``dist = 1``) as soon as one box face separates the sphere. Contacts whose distance lies in
``[0, margin)`` are then never created, while MuJoCo C creates them and starts pushing back once
``dist < margin``. In PointMaze (margin 0.002 per geom) the two engines agree to 1e-7 in free motion but part ways
when the ball grazes a wall corner. This module computes the exact sphere-box distance (closest point of the box,
found by clamping the sphere centre in the box frame) and registers it for MJX's (sphere, box) pair.

It patches MJX internals (``collision_driver._COLLISION_FUNC``, ``collision_convex.collider``,
``collision_primitive.collider``, ``math.make_frame``, ``types.GeomType``), so
:func:`use_exact_sphere_box_contacts` and :func:`use_mujoco_capsule_plane_frames` first check that the installed
``mujoco-mjx`` lies in :data:`SUPPORTED_MJX_VERSIONS`, the releases whose internals they were written against and
that pass the float64 parity tests against gymnasium-robotics
(``tests/test_envs_pointmaze.py``, ``tests/test_envs_antmaze.py``).
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
        f"diffrl's MJX contact patches (diffrl/envs/mjx_contact.py) support mujoco-mjx >={lowest},"
        f"<{first_unsupported}, but {installed} is installed: {problem}. Install a supported release "
        f"(pip install 'mujoco-mjx>={lowest},<{first_unsupported}'), or port the patches to this release, check that "
        f"tests/test_envs_pointmaze.py and tests/test_envs_antmaze.py pass, and widen SUPPORTED_MJX_VERSIONS."
    )


def plane_capsule_contacts(plane, capsule):
    """``(dist [2], pos [2, 3], frame [2, 3, 3])`` of MuJoCo C's two plane-capsule contacts (one per cap centre).

    The first tangent is the capsule axis made orthogonal to the plane normal (``mjc_PlaneCapsule`` passes the axis
    to ``mju_makeFrame``, which projects it), whatever the capsule's tilt; MJX 3.17 falls back to a fixed tangent
    once the capsule is steeper than 60 degrees. With a pyramidal friction cone the tangents decide the forces, so
    a tilted ant leg on the floor is pushed differently by the two engines without this.
    """
    normal, axis = plane.mat[:, 2], capsule.mat[:, 2]
    tangent = axis - normal * jnp.dot(normal, axis)
    length = jnp.linalg.norm(tangent)
    tangent = jnp.where(length > 1e-15, tangent / jnp.where(length > 1e-15, length, 1.0), jnp.array([1.0, 0.0, 0.0]))
    frame = jnp.stack([normal, tangent, jnp.cross(normal, tangent)])
    radius, segment = capsule.size[0], axis * capsule.size[1]
    ends = jnp.stack([capsule.pos + segment, capsule.pos - segment])
    dist = (ends - plane.pos) @ normal - radius
    pos = ends - normal * (radius + 0.5 * dist)[:, None]
    return dist, pos, jnp.stack([frame, frame])


def _collision_table():
    """MJX's private collision table, its ``collider`` decorators, ``make_frame`` and ``GeomType``, after checking
    that the installed ``mujoco-mjx`` is one the patches here were written and parity-tested against."""
    try:
        installed = importlib.metadata.version("mujoco-mjx")
    except importlib.metadata.PackageNotFoundError:
        raise _unsupported("no release", "the mujoco-mjx distribution is not installed") from None
    lowest, first_unsupported = SUPPORTED_MJX_VERSIONS
    release = _release(installed)
    if release is None or not _release(lowest) <= release < _release(first_unsupported):
        raise _unsupported(installed, "its collision internals are untested")
    try:
        from mujoco.mjx._src import (
            collision_convex,
            collision_driver,
            collision_primitive,
        )
        from mujoco.mjx._src.math import make_frame
        from mujoco.mjx._src.types import GeomType

        table = collision_driver._COLLISION_FUNC
        colliders = {"convex": collision_convex.collider, "primitive": collision_primitive.collider}
    except (ImportError, AttributeError) as err:
        raise _unsupported(installed, f"a private MJX name is missing ({err})") from err
    for pair in ((GeomType.SPHERE, GeomType.BOX), (GeomType.PLANE, GeomType.CAPSULE)):
        if pair not in table:
            raise _unsupported(installed, f"its collision table has no {pair} entry")
    return table, colliders, make_frame, GeomType


@functools.cache
def use_exact_sphere_box_contacts() -> None:
    """Register :func:`sphere_box_contact` for MJX's (sphere, box) pair, once per process.

    Later calls do nothing, so a deliberate override made afterwards (the parity script's stock run) stays.
    Raises :class:`UnsupportedMJXError` for an MJX release outside :data:`SUPPORTED_MJX_VERSIONS` or one that
    lacks the private names the patch uses.
    """
    table, colliders, make_frame, geom = _collision_table()
    contact = functools.partial(sphere_box_contact, make_frame=make_frame)
    table[(geom.SPHERE, geom.BOX)] = colliders["convex"](ncon=1)(contact)


@functools.cache
def use_mujoco_capsule_plane_frames() -> None:
    """Register :func:`plane_capsule_contacts` for MJX's (plane, capsule) pair, once per process (as above)."""
    table, colliders, _, geom = _collision_table()
    table[(geom.PLANE, geom.CAPSULE)] = colliders["primitive"](ncon=2)(plane_capsule_contacts)


def _bounded_while_loop(cond_fun, body_fun, init_val, max_iter):
    """``body_fun`` while ``cond_fun`` holds, at most ``max_iter`` times: the iterations of MJX's
    ``solver._while_loop_scan``, as a ``lax.while_loop``."""
    import jax

    def running(carry):
        value, count = carry
        return (count < max_iter) & cond_fun(value)

    def step(carry):
        value, count = carry
        return body_fun(value), count + 1

    return jax.lax.while_loop(running, step, (init_val, 0))[0]


@functools.cache
def use_early_exit_linesearch() -> None:
    """Run MJX's Newton/CG line search as a ``lax.while_loop`` instead of its ``lax.scan`` over ``ls_iterations``
    (50 in every model here) steps, once per process.

    MJX writes the line search as a scan whose steps turn into no-ops once it has converged (so that reverse-mode
    autodiff can go through the solver). Under ``vmap`` a ``cond`` becomes a ``select``, so every environment pays
    for all 50 steps at every solver iteration; the while loop stops when the slowest environment of the batch has
    converged, after the same iterations with the same arithmetic (the results are identical). Environments are
    never differentiated here, so nothing needs the scan; the patch holds for the whole process, so other code in
    it that takes reverse-mode gradients through an MJX model with ``opt.iterations == 1`` would need the stock
    scan. Raises :class:`UnsupportedMJXError` as the contact
    patches do.
    """
    _collision_table()  # the version check
    from mujoco.mjx._src import solver

    if not callable(getattr(solver, "_while_loop_scan", None)):
        raise _unsupported(importlib.metadata.version("mujoco-mjx"), "solver._while_loop_scan is missing")
    solver._while_loop_scan = _bounded_while_loop
