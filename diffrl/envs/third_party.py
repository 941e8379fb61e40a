"""Tidying up after third-party packages: the lines MJX prints when the optional ``warp`` package is absent, the
notice gymnasium-robotics prints on import (about its Adroit envs, which diffrl does not use), the maze XML
files gymnasium-robotics leaves in the temp folder, and a joint-type check of gymnasium-robotics 1.4.2 that MuJoCo
4.0.0 fails (it keeps FrankaKitchen from being built)."""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
import types

MISSING_WARP_LINES = ("Failed to import warp:", "Failed to import mujoco_warp:")  # mujoco/mjx/warp/__init__.py


def import_mjx_quietly() -> None:
    """Import ``mujoco.mjx`` without the two lines it prints when ``warp`` is not installed; anything else the
    import prints still reaches stdout."""
    if "mujoco.mjx" in sys.modules:
        return
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            import mujoco.mjx  # noqa: F401
    finally:
        lines = captured.getvalue().splitlines(keepends=True)
        sys.stdout.write("".join(line for line in lines if not line.startswith(MISSING_WARP_LINES)))


def import_gymnasium_robotics_quietly():
    """``import gymnasium_robotics`` without the version notice it prints to stderr (``farama_notifications``),
    anything else the import prints still reaching stderr, and with its joint-type check mended. Returns the
    module."""
    if "gymnasium_robotics" in sys.modules:
        _compare_joint_types_as_ints()
        return sys.modules["gymnasium_robotics"]
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            import gymnasium_robotics
    finally:
        try:
            from farama_notifications import notifications
            notices = set(notifications.get("gymnasium_robotics", {}).values())
        except ImportError:
            notices = set()
        lines = captured.getvalue().splitlines(keepends=True)
        sys.stderr.write("".join(line for line in lines if line.strip() not in notices))
    _compare_joint_types_as_ints()
    return gymnasium_robotics


def _compare_joint_types_as_ints() -> None:
    """gymnasium-robotics' joint accessors (``utils/mujoco_utils.py``: ``get_joint_qpos`` and friends) assert
    ``model.jnt_type[j] in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE)``. In MuJoCo 4.0.0 the
    enum compares unequal to the NumPy integer the model holds, so the assertion fails for every hinge joint and
    ``FrankaKitchen-v1`` cannot be built (gymnasium-robotics 1.4.2). Where that is so, the module sees ``mjtJoint``
    as plain integers (the same values); nothing else in it changes."""
    import mujoco
    import numpy as np
    from gymnasium_robotics.utils import mujoco_utils

    hinge = mujoco.mjtJoint.mjJNT_HINGE
    if np.int32(int(hinge)) in (hinge,) or mujoco_utils.mujoco is not mujoco:  # not needed, or done already
        return
    mujoco_utils.mujoco = _MujocoWithIntJointTypes(mujoco)


class _MujocoWithIntJointTypes(types.ModuleType):
    """``mujoco`` as gymnasium-robotics' ``mujoco_utils`` sees it: every attribute is the real module's (looked up
    when asked for), except ``mjtJoint``, whose members are plain ints."""

    def __init__(self, mujoco):
        super().__init__(mujoco.__name__, mujoco.__doc__)
        self._mujoco = mujoco
        self.mjtJoint = types.SimpleNamespace(**{k: int(v) for k, v in mujoco.mjtJoint.__members__.items()})

    def __getattr__(self, name):
        return getattr(self._mujoco, name)


@contextlib.contextmanager
def removing_maze_xml_files():
    """Run the block with the temp folder pointed at a private folder, deleted afterwards with everything in it:
    such as the ``ant_maze*.xml`` model file each gymnasium-robotics maze env writes when built and never deletes.

    Other processes' files are never touched; ``tempfile.tempdir`` is set for the block, so other threads should
    not make temp files meanwhile."""
    previous = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="diffrl-env-") as private:
        tempfile.tempdir = private
        try:
            yield
        finally:
            tempfile.tempdir = previous
