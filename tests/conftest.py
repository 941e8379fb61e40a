"""Test configuration: CPU only, four simulated devices so sharding can be checked on one machine, a
compilation cache shared by the session (tests that build the same program, e.g. one MJX rollout, compile once),
and XLA CPU settings for a suite that compiles far more than it runs:

* the elemental IR emitters instead of XLA's newer fusion emitters (``--xla_cpu_use_fusion_emitters=false``):
  compiles in about half the time (a HalfCheetah MJX step 30 s -> 14 s, its reset 21 s -> 10 s; a Diffuser
  agent's train chunk 12 s -> 9 s; each eager op about a third faster);
* no backend optimisation by default (``jax_disable_most_optimizations``: LLVM's expensive passes off, backend
  optimisation level 0): a Diffuser agent's init compiles in 8 s instead of 22 s. Programs that run long
  (hundreds of training steps) compile at level 1 instead, for tests that request the fixture
  ``optimized_compilation``: they compile about as fast and run 2-3x faster.

The two xdist workers take whole files (``--dist loadfile``); the longest files are handed out first
(``--no-loadscope-reorder`` keeps the order set here), so that the workers finish together.
"""

import atexit
import contextlib
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    flags = (flags + " --xla_force_host_platform_device_count=4").strip()
if "xla_cpu_use_fusion_emitters" not in flags:
    flags += " --xla_cpu_use_fusion_emitters=false"
if "xla_llvm_disable_expensive_passes" not in flags:
    flags += " --xla_llvm_disable_expensive_passes=true"
if "xla_backend_optimization_level" not in flags:
    flags += " --xla_backend_optimization_level=1"  # where jax_disable_most_optimizations is off
os.environ["XLA_FLAGS"] = flags
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")  # read when jax is imported, here and in subprocesses

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="diffrl-test-jax-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"


@contextlib.contextmanager
def optimizing():
    """Compile at XLA backend optimisation level 1 inside the block (see the module docstring)."""
    import jax

    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", True)


@pytest.fixture
def optimized_compilation():
    """Compile at XLA backend optimisation level 1 for the duration of the test."""
    with optimizing():
        yield


# The longest files, longest first (by their time on the 2-core CPU, 2026-11-30); the others follow in
# their collection order.
LONGEST_FILES = ("test_envs_locomotion.py", "test_diffuser.py", "test_runner.py", "test_multihost.py", "test_sac.py",
                 "test_samplers.py", "test_envs_pointmaze.py", "test_envs_antmaze.py", "test_latent_diffuser.py",
                 "test_plandq.py", "test_generate.py", "test_antmaze_data.py", "test_ldcq.py",
                 "test_benchmarks.py", "test_diar.py", "test_dql.py", "test_bad_input.py", "test_evaluation.py",
                 "test_envs_registry_and_fallback.py", "test_demo_and_cli.py", "test_maze2d.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)

    items.sort(key=rank)  # stable: the tests of a file keep their order
