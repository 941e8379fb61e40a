"""Test configuration: CPU only, four simulated devices so sharding can be checked on one machine, a
compilation cache shared by the session (tests that build the same program, e.g. one MJX rollout, compile once),
and the CPU backend's code generation at its lowest optimisation (LLVM's expensive passes off, backend
optimisation level 0): tests compile far more than they run. A Diffuser agent's init compiles in 8 s instead of
22 s and its train chunk in 10 s instead of 24 s, and runs ~2x slower; the whole suite went from 9m39s to 8m12s
on two cores."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    flags = (flags + " --xla_force_host_platform_device_count=4").strip()
if "xla_llvm_disable_expensive_passes" not in flags:
    flags += " --xla_llvm_disable_expensive_passes=true"
if "xla_backend_optimization_level" not in flags:
    flags += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = flags

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="diffrl-test-jax-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
