"""Write the actor of a cached direction-following ant (``diffrl data generate antmaze-*``) as the test fixture.

    python tests/scripts/export_ant_expert.py [EXPERTS_DIR] [OUT]

EXPERTS_DIR defaults to ``~/.cache/diffrl/experts``, OUT to ``tests/data/ant_direction_expert.npz``: the actor's
parameters of the latest checkpoint, keyed ``layer/kernel`` and ``layer/bias``, plus ``steps`` (its SAC steps).
"""

import pathlib
import sys

import jax
import numpy as np

from diffrl.experts.antmaze_data import direction_expert_workdir
from diffrl.experts.locomotion_data import default_experts_root
from diffrl.train.checkpoint import Checkpointer

HERE = pathlib.Path(__file__).resolve().parent


def main():
    experts = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else default_experts_root()
    out = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else HERE.parent / "data" / "ant_direction_expert.npz"
    checkpointer = Checkpointer(direction_expert_workdir(experts), create=False)
    step = checkpointer.latest_step()
    params = checkpointer.restore_saved(step, "exported")
    checkpointer.close()
    arrays = {"/".join(key.key for key in path): np.asarray(leaf, np.float32)
              for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, steps=np.int64(step), **arrays)
    print(f"{out}: SAC step {step}, {sum(a.size for a in arrays.values()):,} parameters")


if __name__ == "__main__":
    main()
