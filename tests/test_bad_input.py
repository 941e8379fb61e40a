"""Bad input, as a new user gives it: every case ends with one line on stderr (no traceback) and a non-zero exit,
and leaves nothing lost or half-written. Also the workdir lock, Ctrl-C and corrupt checkpoints."""

from __future__ import annotations

import os
import threading

import minari
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import diffrl.cli
from diffrl.cli import main
from diffrl.data import generate as gen
from diffrl.locking import LOCK_FILE, LockedError, exclusive_lock
from diffrl.train import loop, pipeline
from diffrl.train.pipeline import load_stage, train
from synthetic import TINY, tiny_config, write_pointmaze_dataset

DIFFUSER = "--config=configs/diffuser.py:pointmaze-umaze"


@pytest.fixture(scope="module")
def maze_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("minari")
    write_pointmaze_dataset(root)
    return root


def one_line(capsys) -> str:
    """The captured stderr, checked to be a single line without a traceback."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("argv, message", [
    (["train", "--config=configs/diffuser.py:nope", "--workdir", "{tmp}/a"], "unknown variant 'nope'"),
    (["train", DIFFUSER, "--workdir", "{tmp}/a", "--config.train.stepz=1"], "unknown config key 'train.stepz'"),
    (["train", DIFFUSER, "--workdir", "{tmp}/file/run"], "cannot write to workdir"),
    (["train", DIFFUSER, "--workdir", "{tmp}/a", "--config.train.steps=0"], "train.steps=0 must be a positive integer"),
    (["train", DIFFUSER, "--workdir", "{tmp}/a", "--config.train.steps=-100"], "train.steps=-100 must be a positive"),
    (["train", DIFFUSER, "--workdir", "{tmp}/a", "--config.train.log_every=0"], "train.log_every=0 must be a positive"),
    (["train", DIFFUSER, "--workdir", "{tmp}/a", "--config.train.batch_size=0"], "train.batch_size=0 must be"),
    (["train", DIFFUSER, "--workdir", "{tmp}/a", "--config.train.batch_size=-4"], "train.batch_size=-4 must be"),
    (["train", "--config=configs/ldcq.py:maze2d-umaze", "--workdir", "{tmp}/a", "--config.q.discount=1.5"],
     "q.discount=1.5 must be in (0, 1]"),
    (["train", DIFFUSER, "--workdir", "{tmp}/a", "--config.compute_dtype=float16"],
     "config.compute_dtype must be one of ['bfloat16', 'float32'], got 'float16'"),
    (["train", DIFFUSER, "--workdir", "{tmp}/a", "--config.train.steps=30", "--config.train.log_every=20"],
     "must be multiples of train.log_every"),
    (["evaluate", "--workdir", "{tmp}/missing"], "no trained method in"),
    (["evaluate", "--workdir", "{tmp}/old"], "holds a run of an earlier diffrl"),
    (["evaluate", "--workdir", "{tmp}/nometa"], "has no diffrl record"),
    (["data", "generate", "pointmaze-umaze", "--root", "{tmp}/file", "--no-progress"], "is a file, not a folder"),
    (["data", "generate", "pointmaze-umaze", "--root", "{tmp}/d", "--dataset-id", "no id"], "Malformed dataset ID"),
    (["data", "generate", "pointmaze-huge"], "unknown environment 'pointmaze-huge'"),
    (["data", "info", "D4RL/pointmaze/umaze-v2", "--root", "{tmp}/missing"], "diffrl data download D4RL/pointmaze"),
    (["data", "info", "diffrl/maze2d/large-v1", "--root", "{tmp}/missing"], "diffrl data generate maze2d-large"),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, capsys, monkeypatch, maze_root, argv, message):
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "old" / "checkpoints" / "10").mkdir(parents=True)  # the layout before stages
    # a checkpoint written by another tool: the arrays are there, diffrl's JSON record is not
    (tmp_path / "nometa").mkdir()
    (tmp_path / "nometa" / "pipeline.json").write_text('{"method": "bc", "stages": ["policy"]}')
    with ocp.CheckpointManager(tmp_path / "nometa" / "policy" / "checkpoints", item_names=("state",)) as manager:
        manager.save(5, args=ocp.args.Composite(state=ocp.args.StandardSave({"w": np.ones(3)})))
    # generation must fail on its arguments before any rollout
    monkeypatch.setattr(gen, "collect_pointmaze", lambda *a, **k: pytest.fail("rolled out before checking"))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] == "train":
        argv.append(f"--config.dataset.root={maze_root}")
    assert main(argv) == 2
    assert message in one_line(capsys)
    assert not (tmp_path / "missing").exists() and not (tmp_path / "a" / "denoiser").exists()
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").rglob("*.hdf5"))


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "--workdir", "w", "--episodes", "0"], "argument --episodes: must be at least 1, got 0"),
    (["evaluate", "--workdir", "w", "--episodes", "-3"], "argument --episodes: must be at least 1, got -3"),
    (["data", "generate", "pointmaze-umaze", "--num-envs", "0"], "argument --num-envs: must be at least 1"),
    (["data", "generate", "pointmaze-umaze", "--steps", "ten"], "argument --steps: expected an integer, got 'ten'"),
])
def test_bad_counts_are_refused_by_the_parser(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err


def test_download_without_network_says_so_and_names_generate(capsys, monkeypatch):
    def refused(dataset_id):
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as err:  # as the HTTP client wraps it
            raise RuntimeError("ConnectError") from err

    monkeypatch.setattr(minari, "download_dataset", refused)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")  # skips the host lookup before the download
    assert main(["data", "download", "D4RL/pointmaze/umaze-v2"]) == 2
    err = one_line(capsys)
    assert "cannot reach the Minari remote" in err and "diffrl data generate" in err


def test_an_unexpected_error_keeps_its_traceback_and_asks_for_a_report(capsys, monkeypatch):
    def broken(args):
        raise IndexError("deep inside")

    monkeypatch.setattr(diffrl.cli, "_data_info", broken)
    assert main(["data", "info", "x/y-v0"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "IndexError: deep inside" in err and "please report it" in err.splitlines()[-1]


def test_ctrl_c_during_generation_writes_nothing(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gen, "collect_pointmaze", interrupted)
    assert main(["data", "generate", "pointmaze-umaze", "--root", str(tmp_path), "--no-progress"]) == 130
    assert one_line(capsys) == "diffrl data generate: interrupted; no dataset was written"
    assert not any(tmp_path.rglob("*.hdf5")) and not list(tmp_path.glob(".diffrl-staging-*"))


def test_stale_lock_of_a_dead_process_does_not_block(tmp_path):
    (tmp_path / LOCK_FILE).write_text("pid 999999999 on elsewhere")  # left by a process killed with -9
    with exclusive_lock(tmp_path):
        assert f"pid {os.getpid()}" in (tmp_path / LOCK_FILE).read_text()
        with pytest.raises(LockedError, match=f"in use by another diffrl process \\(pid {os.getpid()}"):
            with exclusive_lock(tmp_path):
                pass
    with exclusive_lock(tmp_path):  # released
        pass


def test_a_checkpoint_moved_aside_again_keeps_the_earlier_one(tmp_path):
    """A second resume past a corrupt checkpoint of the same step (a run cut short twice there) moves it to
    ``corrupt-<step>-1``: the first one stays, and the rename does not fail on the taken name."""
    for name in ("20", "corrupt-20"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "marker").write_text(name)
    assert loop._move_aside(tmp_path, 20) == tmp_path / "corrupt-20-1"
    assert [(tmp_path / d / "marker").read_text() for d in ("corrupt-20", "corrupt-20-1")] == ["corrupt-20", "20"]
    assert not (tmp_path / "20").exists()


def test_a_second_train_on_a_busy_workdir_refuses_and_the_first_finishes_intact(maze_root, tmp_path, capsys,
                                                                                monkeypatch):
    """A run holds its workdir: a second ``diffrl train`` there refuses with the holder's pid while the first goes
    on to finish. When that run is extended, its truncated last checkpoint is moved aside and training resumes from
    the one before it, passing through the same state; and Ctrl-C ends a run with one line naming its last
    checkpoint."""
    run, busy, done = tmp_path / "run", threading.Event(), threading.Event()
    config = tiny_config(maze_root, "train.steps=20")

    def hold(step, metrics):
        if step == 10:
            busy.set()
            assert done.wait(120)

    first = threading.Thread(target=lambda: train(config, run, progress=False, on_log=hold))
    first.start()
    assert busy.wait(300)
    argv = ["train", DIFFUSER, "--workdir", str(run), "--no-progress", f"--config.dataset.root={maze_root}",
            *[f"--config.{o}" for o in TINY], "--config.train.steps=20"]
    try:
        assert main(argv) == 2
        assert f"in use by another diffrl process (pid {os.getpid()}" in one_line(capsys)
    finally:
        done.set()
        first.join()
    checkpoints = run / "denoiser" / "checkpoints"
    assert sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()) == [10, 20]
    finished = load_stage(run / "denoiser")[2]

    for file in (checkpoints / "20" / "state").rglob("*"):  # cut short, as by a full disk
        if file.is_file() and file.stat().st_size > 100:
            file.write_bytes(file.read_bytes()[:50])
    summary = train(tiny_config(maze_root, "train.steps=30"), run, progress=False)["denoiser"]  # a longer run
    assert summary["start_step"] == 10 and summary["step"] == 30 and (checkpoints / "corrupt-20").is_dir()
    for a, b in zip(jax.tree.leaves(finished), jax.tree.leaves(load_stage(run / "denoiser", 20)[2])):
        np.testing.assert_array_equal(a, b)  # step 20 again, bit for bit

    # another process of a multi-host run found step 10 (a read of 30 failed there): all raise, none waits
    monkeypatch.setattr(loop, "process_values", lambda found: np.asarray([found, [10, 0]]))
    before = sorted(p.name for p in checkpoints.iterdir())
    assert main([*argv[:-1], "--config.train.steps=40"]) == 2
    message = one_line(capsys)
    assert "found different checkpoints to resume from" in message and "[[30, 0], [10, 0]]" in message
    assert sorted(p.name for p in checkpoints.iterdir()) == before  # nothing moved, nothing written
    monkeypatch.undo()
    assert main([*argv[:-1], "--config.train.steps=40", "--config.model.dim=16"]) == 2  # another model: refused
    assert "holds a run with another model ({'dim': 8," in one_line(capsys)
    assert sorted(p.name for p in checkpoints.iterdir()) == before

    def ctrl_c(step, metrics):  # at step 20, before its checkpoint
        if step == 20:
            raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "train", lambda *a, **k: train(*a, **{**k, "on_log": ctrl_c}))
    interrupted = tmp_path / "interrupted"
    assert main([*argv[:3], str(interrupted), *argv[4:]]) == 130
    assert one_line(capsys).endswith(f"the checkpoints in {interrupted} are kept (the latest: stage denoiser, step 10);"
                                     " run the same command to resume")
