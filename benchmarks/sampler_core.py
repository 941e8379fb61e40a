"""Throughput of the shared diffusion samplers (one ``lax.scan`` per chain) with a residual MLP denoiser.

    python benchmarks/sampler_core.py [--batches 1 64 1024] [--dim 16] [--hidden 256]

For each sampler and batch size: compile time apart from steady state (best of 5), latency per call, samples/s,
and XLA's cost analysis of the compiled chain (FLOPs, bytes accessed) with the FLOP/s and bytes/s achieved.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).parent))
from common import timed, versions, write_section  # noqa: E402

from diffrl import diffusion  # noqa: E402
from diffrl.nets import MLPDenoiser  # noqa: E402

SAMPLERS = {
    "DDPM 100 steps": (diffusion.SamplerConfig(method="ddpm"), {}),
    "DDIM 20 steps": (diffusion.SamplerConfig(method="ddim", steps=20), {}),
    "DDPM 100 + CFG (w=1.5)": (diffusion.SamplerConfig(method="ddpm"), {"cfg": True}),
}


def cost(compiled) -> tuple[float, float]:
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis.get("flops", 0.0)), float(analysis.get("bytes accessed", 0.0))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64, 1024])
    parser.add_argument("--dim", type=int, default=16, help="sample dimension (LDCQ latent: 16)")
    parser.add_argument("--cond-dim", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    args = parser.parse_args(argv)
    schedule = diffusion.make_schedule("linear", 100)
    net = MLPDenoiser(hidden=args.hidden, depth=3)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, args.dim)), jnp.zeros((1,), jnp.int32),
                      jnp.zeros((1, args.cond_dim)))
    rows = ["| sampler | batch | compile s | latency ms | samples/s | model GFLOP/call | GFLOP/s | GB/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, (config, options) in SAMPLERS.items():
        model_calls = len(diffusion.timestep_sequence(schedule.num_steps, schedule.num_steps, config.steps))
        for batch in args.batches:
            def draw(params, rng, cond, config=config, options=options, batch=batch):
                hooks = {}
                if options.get("cfg"):
                    hooks["cfg"] = diffusion.ClassifierFreeGuidance(jnp.zeros((args.cond_dim,)), 1.5)
                return diffusion.sample(rng, lambda x, t, c: net.apply(params, x, t, c), schedule,
                                        (batch, args.dim), config, cond, **hooks)

            inputs = (params, jax.random.PRNGKey(1), jnp.ones((batch, args.cond_dim)))
            start = time.perf_counter()
            compiled = jax.jit(draw).lower(*inputs).compile()
            compile_s = time.perf_counter() - start
            _, best = timed(compiled, *inputs)
            # one denoiser call on the batch the sampler feeds it (doubled under CFG), times the number of calls
            width = 2 * batch if options.get("cfg") else batch
            call = jax.jit(net.apply).lower(params, jnp.zeros((width, args.dim)), jnp.zeros((width,), jnp.int32),
                                            jnp.zeros((width, args.cond_dim))).compile()
            flops, bytes_accessed = (model_calls * c for c in cost(call))
            rows.append(f"| {name} | {batch} | {compile_s:.2f} | {best * 1e3:.2f} | {batch / best:,.0f} | "
                        f"{flops / 1e9:.3f} | {flops / best / 1e9:.1f} | {bytes_accessed / best / 1e9:.1f} |")
            print(rows[-1], flush=True)
    body = (f"{versions('flax')}; MLP denoiser hidden {args.hidden}, depth 3, x dim {args.dim}, condition dim "
            f"{args.cond_dim}; linear schedule N = 100. GFLOP/call and GB/s: XLA's cost analysis of one denoiser "
            "call times the number of calls in the chain (the sampler's own arithmetic is not counted).\n\n"
            + "\n".join(rows))
    command = "python benchmarks/sampler_core.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"wrote {write_section('Diffusion core samplers', body, command.strip())}")


if __name__ == "__main__":
    main()
