"""XLA:CPU's convolution gradients inside a loop body: a minimal reproduction, and the form diffrl uses instead.

    diffrl benchmark conv_in_loop [--shape B L C F] [--kernel 5] [--steps 10] [--repeats 5] [--json PATH] [--no-write]

One 1-D convolution ``[B, L, C] * [k, C, F]`` (padding k // 2), the shape of a Diffuser maze U-Net layer; the loss
``sum(sin(conv(x, w)))``. Each gradient (the input's, the kernel's) is timed in one jitted call and per step of a
``lax.scan`` of ``--steps`` gradient steps, the loop ``diffrl train`` compiles, for four forms of the same
function: XLA's convolution with JAX's autodiff, the same with diffrl's hand-written VJP
(``diffrl.nets.convolution.conv_forward_form_grads``: both gradients as forward convolutions over transposed
operands), Winograd's F(4, k) with the same kernel gradient and a Winograd input gradient (what ``Conv1d`` runs on a
CPU for large layers, ``winograd_conv_forward_form_grads``; needs an odd ``--kernel`` and L divisible by 4, else its
rows are left out), and im2col (a matrix product over stacked shifted windows, the U-Net's form before). Inside the
scan, the autodiff kernel gradient was ~110x slower than outside it on this project's CPU (jax 0.10.2); the forward
form was not.
The autodiff rows use jax alone (``jax.lax.conv_general_dilated``, ``jax.grad``, ``jax.lax.scan``): they reproduce
the open upstream report jax-ml/jax#12868 (a non-canonical convolution, there a channels-first one, is not rewritten
into XLA:CPU's canonical form inside a loop body and runs far slower there) for the kernel gradient that
autodiff writes for a channels-last convolution.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
from diffrl.benchmarks.common import benchmark_parser, report, steady_seconds, versions

from diffrl.nets.convolution import (
    conv_forward_form_grads,
    native_conv,
    winograd_conv_forward_form_grads,
)


def im2col_conv(x, kernel, padding: int):
    k = kernel.shape[0]
    x = jnp.pad(x, [(0, 0), (padding, padding), (0, 0)])
    length = x.shape[1] - k + 1
    windows = jnp.concatenate([x[:, j : j + length] for j in range(k)], axis=-1)
    return windows @ kernel.reshape(-1, kernel.shape[-1])


def winograd_f4(x, kernel, padding: int):
    return winograd_conv_forward_form_grads(x, kernel, padding, 4)


FORMS = {"XLA conv, autodiff": native_conv, "XLA conv, forward-form VJP (diffrl)": conv_forward_form_grads,
         "Winograd F(4, k), forward-form VJP (diffrl)": winograd_f4, "im2col": im2col_conv}


def timed(fn, *args, repeats: int) -> float:
    """Best of ``repeats`` calls of ``fn`` after a warm-up call that compiles it."""
    jax.block_until_ready(fn(*args))
    return steady_seconds(fn, *args, repeats=repeats)


def measure(conv, wrt: int, x, kernel, padding: int, steps: int, repeats: int) -> tuple[float, float]:
    """Seconds of one gradient with respect to argument ``wrt`` (0: x, 1: kernel): alone, and per scan step."""
    def grad(x, kernel):
        return jax.grad(lambda *a: jnp.sum(jnp.sin(conv(a[0], a[1], padding))), argnums=wrt)(x, kernel)

    def step(carry, _):  # gradient descent on the argument, so each step depends on the last
        moved = carry[wrt] - 1e-4 * grad(*carry)
        return (moved, carry[1]) if wrt == 0 else (carry[0], moved), None

    alone = timed(jax.jit(grad), x, kernel, repeats=repeats)
    looped = timed(jax.jit(lambda x, kernel: jax.lax.scan(step, (x, kernel), None, length=steps)[0]), x, kernel,
                   repeats=repeats)
    return alone, looped / steps


def main(argv=None) -> int:
    parser = benchmark_parser("conv_in_loop", __doc__)
    parser.add_argument("--shape", nargs=4, type=int, default=[64, 128, 128, 128], metavar=("B", "L", "C", "F"))
    parser.add_argument("--kernel", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="gradient steps in the scan")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls (the best counts)")
    args = parser.parse_args(argv)
    if min(args.shape) < 1 or args.kernel < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("sizes, --steps and --repeats must be positive")
    argv = sys.argv[1:] if argv is None else argv
    batch, length, channels, features = args.shape
    kx, kw = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(kx, (batch, length, channels))
    kernel = 0.05 * jax.random.normal(kw, (args.kernel, channels, features))
    figures, rows = [], []
    for form, conv in FORMS.items():
        if conv is winograd_f4 and (args.kernel % 2 == 0 or length % 4):
            continue
        for wrt, name in enumerate(("input", "kernel")):
            alone, looped = measure(conv, wrt, x, kernel, args.kernel // 2, args.steps, args.repeats)
            figures.append({"form": form, "gradient": name, "alone_s": alone, "in_scan_s": looped})
            rows.append(f"| {form} | {name} | {alone * 1e3:,.2f} | {looped * 1e3:,.2f} | {looped / alone:,.1f}x |")
            print(rows[-1], flush=True)
    header = (f"{versions()}; conv [{batch}, {length}, {channels}] * [{args.kernel}, {channels}, {features}], "
              f"padding {args.kernel // 2}; gradient of sum(sin(conv)) alone (jitted) and per step of a "
              f"{args.steps}-step lax.scan; best of {args.repeats}.")
    table = ["| form | gradient | alone ms | in scan ms/step | scan / alone |", "|---|---|---:|---:|---:|", *rows]
    report("Convolution gradients inside a loop body", "conv_in_loop", argv, header, table, figures,
           json_path=args.json, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
