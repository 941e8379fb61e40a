"""A multi-host run on one machine: two processes of ``diffrl train --distributed`` (``jax.distributed`` with Gloo
CPU collectives, four CPU devices each) train one stage together with evaluation during training, then resume
it past a corrupt checkpoint, and fail together when process 0 cannot lock or write the shared workdir. What only a
second process meets: its MJX model must sit on its own devices, the processes must agree on the state of the shared
workdir before any of them writes checkpoints into it, and a write that only process 0 makes must not leave the
others waiting for it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from diffrl.locking import exclusive_lock
from synthetic import write_pointmaze_dataset
from tensorboard_reader import read_scalars


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train_on_two_processes(root, workdir, steps: int, episodes: int, fails: bool = False) -> list[str]:
    """Both processes' output. A successful run is expected unless ``fails``: then both must end with diffrl's
    one-line error. Fails as soon as a process raises where none should, stopping both."""
    port = _free_port()
    command = [sys.executable, "-m", "diffrl.cli", "train", "--distributed", "--no-progress",
               "--config=configs/bc.py:pointmaze-umaze", "--workdir", str(workdir), f"--config.dataset.root={root}",
               f"--config.train.steps={steps}", "--config.train.log_every=10", "--config.train.checkpoint_every=10",
               "--config.train.batch_size=16", "--config.eval.every=20", f"--config.eval.episodes={episodes}"]
    logs = [workdir.parent / f"process{i}-{steps}-{fails}.log" for i in range(2)]
    processes = [subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                  env={**os.environ, "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
                                       "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i),
                                       "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"})
                 for i, log in enumerate(logs)]
    deadline = time.monotonic() + 300
    try:
        while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
            # a process that raised waits for the others at jax.distributed's exit barrier: fail on its traceback
            failed = [i for i, log in enumerate(logs)
                      if "Traceback (most recent call last)" in (text := log.read_text())
                      or ("diffrl train: " in text and not fails)]
            assert not failed, f"process {failed[0]} failed:\n{logs[failed[0]].read_text()[-3000:]}"
            time.sleep(0.5)
    finally:
        for p in processes:
            p.kill()
            p.wait()
    outputs = [log.read_text() for log in logs]
    for i, (p, out) in enumerate(zip(processes, outputs)):
        assert p.returncode == (2 if fails else 0), f"process {i}:\n{out[-3000:]}"  # 2: diffrl's one-line errors
    return outputs


def test_two_processes_train_evaluate_and_resume(tmp_path):
    root = tmp_path / "minari"
    write_pointmaze_dataset(root)
    workdir = tmp_path / "run"
    first = _train_on_two_processes(root, workdir, steps=20, episodes=4)  # 4 episodes: one per local device
    for out in first:
        assert "finished at step 20 (resumed from 0) on 8 device(s)" in out
        assert "evaluated 4 episodes" in out
    checkpoints = workdir / "policy" / "checkpoints"
    for file in (checkpoints / "20").rglob("*"):  # cut short, as by a full disk: resume from step 10
        if file.is_file() and file.stat().st_size > 100:
            file.write_bytes(file.read_bytes()[:50])
    second = _train_on_two_processes(root, workdir, steps=40, episodes=3)  # 3: not split over the local devices
    for out in second:
        assert "finished at step 40 (resumed from 10) on 8 device(s)" in out
        assert out.count("evaluated 3 episodes") == 2  # at steps 20 and 40
    assert (checkpoints / "corrupt-20").is_dir()  # moved aside by process 0 alone
    assert {int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()} >= {30, 40}
    scalars = read_scalars(workdir / "policy" / "tensorboard")
    # the first run's evaluation at step 20, then the resumed run's (from step 10) at 20 and 40
    assert [step for step, _ in scalars["eval/normalized_score"]] == [20, 20, 40]

    with exclusive_lock(workdir):  # another run holds the workdir: every process refuses, none waits
        refused = _train_on_two_processes(root, workdir, steps=60, episodes=3, fails=True)
    for out in refused:
        assert f"workdir {workdir} is in use by another diffrl process" in out

    record = workdir / "pipeline.json"  # process 0 cannot write it: it says why, the others that it failed
    record.unlink()
    record.mkdir()
    failed = _train_on_two_processes(root, workdir, steps=60, episodes=3, fails=True)
    assert "Is a directory" in failed[0]
    assert f"process 0 could not write {record}" in failed[1]
