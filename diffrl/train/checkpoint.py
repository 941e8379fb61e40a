"""Orbax checkpoints of one stage's training run.

Layout: ``<workdir>/checkpoints/<step>/{state,exported,facts,meta}``: the train carry (state and rng), the
parameters the stage hands on (what later stages and the policy read, restored without a template), the
method's fitted arrays (its normaliser), and a JSON record (format version, config, dataset facts). Saves are
asynchronous (the train loop goes on while the arrays are written) and keep the last ``keep`` steps; Orbax writes
each step to a temporary folder and renames it when complete, so an interrupted save never leaves a step that looks
finished.
"""

from __future__ import annotations

import pathlib

import jax
import orbax.checkpoint as ocp

FORMAT = 2  # 1: before stages (one agent state per run, normalisers in the JSON record)


class CheckpointError(ValueError):
    """A checkpoint that is missing or does not fit the model being restored."""


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


class Checkpointer:
    def __init__(self, workdir: str | pathlib.Path, keep: int = 3, asynchronous: bool = True, create: bool = True):
        self.directory = pathlib.Path(workdir).resolve() / "checkpoints"
        if not create and not self.directory.is_dir():
            raise CheckpointError(f"no checkpoints in {pathlib.Path(workdir)} (expected {self.directory}); "
                                  "train first with diffrl train --workdir DIR")
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create,
                                               enable_async_checkpointing=asynchronous)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "exported", "facts", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state, exported, facts, meta: dict, force: bool = False) -> bool:
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), exported=ocp.args.StandardSave(exported),
                                  facts=ocp.args.StandardSave(facts),
                                  meta=ocp.args.JsonSave({**meta, "format": FORMAT}))
        return self.manager.save(int(step), args=args, force=force)

    def _resolve(self, step: int | None) -> int:
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}; train first with diffrl train --workdir DIR")
        if step is None:
            return max(steps)
        if step not in steps:
            raise CheckpointError(f"no checkpoint at step {step} in {self.directory}; available: {sorted(steps)}")
        return step

    def restore_meta(self, step: int | None = None) -> tuple[int, dict]:
        step = self._resolve(step)
        where = self.directory / str(step)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except KeyError:
            raise CheckpointError(f"checkpoint {where} has no diffrl record (the item 'meta'): it was not written by "
                                  "diffrl train, or its writing was cut short") from None
        except Exception as err:  # orbax raises many kinds for unreadable files
            raise CheckpointError(f"checkpoint {where} is unreadable ({_first_line(err)})") from None
        if not isinstance(restored.meta, dict):
            raise CheckpointError(f"checkpoint {where} has an unreadable diffrl record (the item 'meta')")
        if restored.meta.get("format") != FORMAT:
            raise CheckpointError(f"checkpoint {self.directory / str(step)} was written by an earlier diffrl (format "
                                  f"{restored.meta.get('format', 1)}, this one reads {FORMAT}); retrain it with diffrl "
                                  "train in a new --workdir")
        return step, restored.meta

    def restore_saved(self, step: int, item: str):
        """The ``exported`` or ``facts`` pytree of ``step`` as saved (no template needed), on the default device."""
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**{item: ocp.args.StandardRestore()}))
        except Exception as err:  # orbax raises many kinds for unreadable files
            raise CheckpointError(f"checkpoint {self.directory / str(step)} is unreadable: its item {item!r} "
                                  f"cannot be restored ({_first_line(err)})") from None
        return jax.tree.map(jax.numpy.asarray, restored[item])

    def restore_state(self, step: int, target):
        """Restore the state pytree into the structure, shapes, dtypes and shardings of ``target``."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        except Exception as err:  # orbax raises many kinds for unreadable or mismatched files
            raise CheckpointError(f"checkpoint {self.directory / str(step)} cannot be restored into this model: "
                                  f"{_first_line(err)} (are its files complete, and was it trained with this "
                                  "config?)") from None
        restored_shapes = jax.tree.map(lambda x: (x.shape, x.dtype), restored.state)
        wanted = jax.tree.map(lambda x: (x.shape, x.dtype), target)
        if restored_shapes != wanted:
            raise CheckpointError(f"checkpoint {self.directory / str(step)} does not fit this model: "
                                  "array shapes differ (was it trained with another config?)")
        return restored.state

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
