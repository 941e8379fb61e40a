"""Test configuration: CPU only, four simulated devices so sharding can be checked on one machine, a
compilation cache shared by the session (tests that build the same program, e.g. one MJX rollout, compile once),
and LLVM's expensive passes off: MJX programs compile in ~60% of the time and run ~30% slower, a good trade
for tests that compile far more than they run."""

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
os.environ["XLA_FLAGS"] = flags

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="diffrl-test-jax-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
