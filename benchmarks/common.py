"""Shared helpers for the benchmark scripts: device naming, versions, timing, and the results file."""

from __future__ import annotations

import datetime
import platform
import re
import time
from importlib import metadata
from pathlib import Path

import jax

RESULTS = Path(__file__).parent / "results"


def device_name() -> str:
    """``cpu`` or the accelerator kind, e.g. ``nvidia-h100-80gb-hbm3``: the results file is named after it."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", device.device_kind.lower()).strip("-")


def device_description() -> str:
    device = jax.devices()[0]
    if device.platform == "cpu":
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
        return f"CPU: {model}, {len(jax.devices())} JAX device(s)"
    return f"{device.device_kind} x{len(jax.devices())}"


def versions(*packages: str) -> str:
    return ", ".join(f"{p} {metadata.version(p)}" for p in ("jax", *packages))


def timed(fn, *args, repeats: int = 5):
    """(compile + first call seconds, best steady-state seconds) of a jitted ``fn``."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return first, best


def write_section(name: str, body: str, command: str) -> Path:
    """Replace (or append) the section ``name`` of ``results/<device>.md``."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{device_name()}.md"
    text = path.read_text() if path.exists() else f"# Benchmarks on {device_name()}\n"
    stamp = datetime.date.today().isoformat()
    section = (f"<!-- {name} -->\n## {name}\n\n{device_description()}; {stamp}; command: `{command}`\n\n"
               f"{body.strip()}\n<!-- /{name} -->")
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)
    return path
