"""TensorBoard event writing without TensorFlow, and the evaluation figures."""

import os
import subprocess
import sys
import tempfile
import textwrap

import matplotlib.image
import numpy as np
import pytest

from diffrl.envs.maze_plot import GOAL_LABEL, PLAN_LABEL, START_LABEL, TRAJECTORY_LABEL, WALL_GID, maze_figure
from diffrl.envs.pointmaze import PointMaze
from diffrl.eval.plots import curve_figure, figure_to_png, save_figure
from diffrl.files import write_atomically
from diffrl.train.logging import SummaryWriter
from tensorboard_reader import read_image_tags, read_scalars, read_text

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _f32(x):
    return float(np.float32(x))


def test_summary_writer_roundtrip(tmp_path):
    import jax.numpy as jnp

    logdir = tmp_path / "run"
    with SummaryWriter(logdir) as writer:
        for step, loss in [(0, 1.25), (10, 0.3), (20, 0.1)]:
            writer.scalar("train/loss", jnp.asarray(loss, jnp.float32), step)
        writer.scalars({"return": np.float64(12.5), "success": 1, "len": np.int32(300)}, step=5, prefix="eval")
        writer.scalars({"return": 14.0, "success": jnp.asarray([0.5])}, step=15, prefix="eval/")
        writer.image("maze/png", figure_to_png(curve_figure({"a": ([0, 1], [1, 0])})), step=3)
        writer.image("maze/array", np.full((6, 9, 3), 200, np.uint8), step=3)
        writer.image("maze/figure", curve_figure({"a": ([0, 1], [1, 0])}), step=4)
        writer.text("notes", "hello **world**", step=1)
        writer.text("notes", "second", step=2)
    writer.close()  # idempotent
    assert "tensorflow" not in sys.modules

    assert [f for f in os.listdir(logdir) if f.startswith("events.out.tfevents.")]
    assert read_scalars(logdir) == {
        "train/loss": [(0, 1.25), (10, _f32(0.3)), (20, _f32(0.1))],
        "eval/return": [(5, 12.5), (15, 14.0)],
        "eval/success": [(5, 1.0), (15, 0.5)],
        "eval/len": [(5, 300.0)],
    }
    assert read_image_tags(logdir) == ["maze/array", "maze/figure", "maze/png"]
    # tensorboardX stores text logged under "notes" as "notes/text_summary".
    assert read_text(logdir) == {"notes/text_summary": [(1, "hello **world**"), (2, "second")]}


def test_disabled_writer_is_a_noop(tmp_path):
    writer = SummaryWriter(tmp_path / "off", enabled=False)
    writer.scalar("a", 1.0, 0)
    writer.scalars({"b": 2.0}, 0)
    writer.image("c", b"not even a png", 0)
    writer.text("d", "x", 0)
    writer.flush()
    writer.close()
    assert not (tmp_path / "off").exists()


def test_writer_rejects_bad_images_and_closed_use(tmp_path):
    writer = SummaryWriter(tmp_path)
    with pytest.raises(ValueError):
        writer.image("bad", np.zeros((4, 4, 3), np.float32), 0)
    with pytest.raises(ValueError):
        writer.image("bad", b"GIF89a", 0)
    writer.close()
    with pytest.raises(RuntimeError):
        writer.scalar("late", 1.0, 0)


def test_tensorflow_is_never_imported_even_if_installed(tmp_path):
    # A fake `tensorflow` that fails loudly (not with ImportError, which TensorBoard's fallback would swallow).
    # Only the writing runs with it: TensorBoard's reader itself imports an installed TensorFlow.
    fake = tmp_path / "fake" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise RuntimeError('tensorflow was imported')\n")
    script = textwrap.dedent(f"""
        import sys
        from diffrl.train.logging import SummaryWriter
        with SummaryWriter({str(tmp_path / 'run')!r}) as w:
            w.scalar('x', 2.0, 7)
            w.image('img', __import__('numpy').zeros((2, 2, 3), 'uint8'), 7)
            w.text('t', 'hi', 7)
        assert 'tensorflow' not in sys.modules
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "fake"), REPO_ROOT]))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_scalars(tmp_path / "run") == {"x": [(7, 2.0)]}
    assert read_image_tags(tmp_path / "run") == ["img"]
    assert read_text(tmp_path / "run") == {"t/text_summary": [(7, "hi")]}


def _umaze_episodes():
    from diffrl.envs.pointmaze import MAZE_MAPS, MazeLayout

    layout = MazeLayout(MAZE_MAPS["umaze"])
    corridor = layout.cell_to_xy(np.array([(1, 1), (1, 2), (1, 3), (2, 3), (3, 3), (3, 2), (3, 1)]))
    t = np.linspace(0.0, 1.0, 40)
    path = np.stack([np.interp(t * 6, np.arange(7), corridor[:, d]) for d in range(2)], axis=-1)
    trajectories = np.stack([path, path[::-1] + 0.05])  # [2, 40, 2]
    valid = np.ones((2, 40), bool)
    valid[1, 30:] = False
    plans = trajectories[:, ::5] + 0.1  # [2, 8, 2]
    goals = np.stack([corridor[-1], corridor[0]])
    return layout, trajectories, plans, goals, valid


def test_maze_figure_draws_every_wall_cell_and_writes_a_png(tmp_path):
    layout, trajectories, plans, goals, valid = _umaze_episodes()
    fig = maze_figure(layout, trajectories, plans=plans, goals=goals, titles=["return 1.0", "return 0.0"],
                      valid=valid)
    n_wall_cells = int(np.sum(np.asarray(layout.maze_map) == 1))
    assert n_wall_cells == 18
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 2
    for ax in panels:
        assert sum(p.get_gid() == WALL_GID for p in ax.patches) == n_wall_cells
        assert ax.get_xticks().size == 0 and ax.get_yticks().size == 0
    assert [ax.get_title() for ax in panels] == ["return 1.0", "return 0.0"]

    png = figure_to_png(fig)
    assert png.startswith(PNG_SIGNATURE)
    out = save_figure(fig, tmp_path / "figs" / "nested" / "maze.png")
    assert os.listdir(tmp_path / "figs" / "nested") == ["maze.png"]
    with open(out, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0


def test_maze_figure_caps_panels():
    layout, trajectories, _, goals, _ = _umaze_episodes()
    many = np.concatenate([trajectories] * 5)  # 10 episodes
    fig = maze_figure(layout, many, goals=goals[0], max_panels=8, ncols=4)
    assert sum(ax.axison for ax in fig.axes) == 8
    fig = maze_figure(layout, trajectories[0])  # a single [T, 2] episode
    assert sum(ax.axison for ax in fig.axes) == 1


class _DrawingOnlyPointMaze:
    """A PointMaze's drawing (its real ``draw_episodes``) without the MJX model."""

    draw_episodes = PointMaze.draw_episodes

    def __init__(self, layout):
        self.layout = layout


def test_rollout_figure_has_one_legend_and_a_title_with_the_step_and_the_score():
    from diffrl.eval.evaluate import rollout_figure

    layout, trajectories, plans, goals, valid = _umaze_episodes()
    n, steps = trajectories.shape[:2]
    observations = np.concatenate([trajectories, np.zeros((n, steps, 4)), np.repeat(goals[:, None], steps, 1)], -1)
    rollout = {"returns": np.array([120.0, 0.0]), "success": np.array([True, False]), "observations": observations,
               "valid": valid, "planned_states": np.concatenate([plans, np.zeros((n, plans.shape[1], 6))], -1)}
    summary = {"dataset_id": "diffrl/pointmaze/umaze-v0", "env": "PointMaze_UMaze-v3", "episodes": 2,
               "normalized_score": 61.25, "stderr": 3.21, "return_mean": 60.0, "return_stderr": 60.0,
               "success_rate": 0.5, "first_hit_score": 40.0, "first_hit_stderr": 40.0}
    fig = rollout_figure(_DrawingOnlyPointMaze(layout), rollout, summary, step=12000, episodes=8)

    assert [ax.get_title() for ax in fig.axes if ax.axison] == ["return 120 (success)", "return 0"]
    assert all(ax.get_legend() is None for ax in fig.axes)  # one legend for the figure, none per panel
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [TRAJECTORY_LABEL, PLAN_LABEL, START_LABEL, GOAL_LABEL]
    title = fig.get_suptitle().replace("\n", " ")
    assert "step 12000" in title and "normalized score 61.2 +/- 3.2" in title and "success rate 0.50" in title
    assert figure_to_png(fig).startswith(PNG_SIGNATURE)

    # Without plans (a policy that does not plan) the legend has no plan entry; without references the title
    # gives the return.
    del rollout["planned_states"]
    summary.update(normalized_score=None, stderr=None, success_rate=None)
    fig = rollout_figure(_DrawingOnlyPointMaze(layout), rollout, summary, step=7, episodes=1)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [TRAJECTORY_LABEL, START_LABEL, GOAL_LABEL]
    assert "step 7" in fig.get_suptitle() and "return 60.0 +/- 60.0" in fig.get_suptitle()


def test_gymnasium_maze_envs_leave_no_model_file_in_the_temp_folder(tmp_path, monkeypatch):
    import gymnasium as gym
    import gymnasium_robotics

    from diffrl.envs.gym_fallback import make_gym_env
    from diffrl.envs.maze2d_gym import Maze2DEnv

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # a temp folder no other test writes to
    gym.register_envs(gymnasium_robotics)
    gym.make("PointMaze_UMaze-v3")
    (leftover,) = tmp_path.glob("ant_maze*.xml")  # gymnasium-robotics alone leaves its maze model behind
    leftover.unlink()

    for env in (make_gym_env("PointMaze_UMaze-v3"), Maze2DEnv("umaze")):
        env.reset(seed=0)
        env.step(env.action_space.sample())
    assert os.listdir(tmp_path) == []
    assert tempfile.gettempdir() == str(tmp_path)


def test_importing_the_envs_prints_no_missing_warp_message():
    """On a machine without warp-lang (hidden from the subprocess): no "Failed to import warp" lines from MJX, and
    asking for MJX's Warp implementation names the extra to install."""
    script = ("import sys; sys.modules['warp'] = None\n"
              "import diffrl.envs\n"
              "from diffrl.envs.base import check_mjx_impl\n"
              "try:\n    check_mjx_impl('warp')\nexcept ImportError as error:\n    print('refused:', error)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Failed to import" not in proc.stdout + proc.stderr
    assert proc.stdout == ("refused: MJX's Warp implementation needs the warp-lang package: "
                           "pip install 'diffrl[warp]'\n")


def test_curve_figure(tmp_path):
    steps = np.arange(50)
    fig = curve_figure({"train": (steps, np.exp(-steps / 10)), "val": (steps, np.exp(-steps / 12))},
                       xlabel="step", ylabel="loss", title="losses")
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.get_lines()] == ["train", "val"]
    assert ax.get_title() == "losses"
    assert figure_to_png(fig).startswith(PNG_SIGNATURE)


def test_save_figure_failures_leave_no_partial_file(tmp_path, monkeypatch):
    fig = curve_figure({"a": ([0, 1], [0, 1])})
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    with pytest.raises(OSError):
        save_figure(fig, blocker / "fig.png")
    assert sorted(os.listdir(tmp_path)) == ["not_a_dir"]

    if os.geteuid() != 0:  # root ignores permissions
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(OSError):
                save_figure(fig, locked / "fig.png")
            assert os.listdir(locked) == []
        finally:
            locked.chmod(0o700)

    # A failure at the final rename keeps the previous file intact and removes the temp file.
    target = tmp_path / "out" / "fig.png"
    save_figure(fig, target)
    before = target.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        save_figure(curve_figure({"b": ([0, 1], [1, 0])}), target)
    assert os.listdir(tmp_path / "out") == ["fig.png"]
    assert target.read_bytes() == before


def test_write_atomically_with_a_writer_that_fails_midway_keeps_the_old_file(tmp_path):
    target = tmp_path / "pool.npy"
    write_atomically(target, lambda f: np.save(f, np.arange(3)))
    assert np.load(target).tolist() == [0, 1, 2]

    def half_then_fail(f):
        f.write(b"\x93NUMPY half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        write_atomically(target, half_then_fail)
    assert os.listdir(tmp_path) == ["pool.npy"]
    assert np.load(target).tolist() == [0, 1, 2]
