"""Model FLOPs utilisation of a dense train step, against this machine's own matmul speed.

  python benchmarks/mfu.py                # CPU defaults: width 512, 8 layers, 256 tokens, batch 16
  python benchmarks/mfu.py --batch 64 --dtype bfloat16   # an accelerator

Prints a table, then (last line) one JSON object of the figures. MFU = analytic train
FLOPs per second (mmjax/perf/flops.py: every trunk pass, embeddings, heads; the same
count the trainer logs) / the best FLOP/s of a square matmul measured in this process, in
the same dtype (mmjax.perf.peak.measured_peak, the trainer's CPU peak too). Where the device
kind has a nominal peak (mmjax.perf.peak.NOMINAL_PEAK), `mfu_nominal` is against that.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from mmjax import objectives  # noqa: E402
from mmjax.perf import peak as perf  # noqa: E402
from mmjax.training import optimizer as optim
from mmjax.models.embedders import ModalitySpec  # noqa: E402
from mmjax.models.model import build_model  # noqa: E402
from mmjax.models.spec import Heads, ModelSpec  # noqa: E402
from mmjax.perf import flops as flops_lib  # noqa: E402
from mmjax.training.step import init_state, make_train_step  # noqa: E402
from report import print_figures  # noqa: E402

PATCH = 8


def add_shape_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
  """The model and batch shape flags, shared with benchmarks/moe.py."""
  p.add_argument("--width", type=int, default=512)
  p.add_argument("--depth", type=int, default=8)
  p.add_argument("--heads", type=int, default=8)
  p.add_argument("--tokens", type=int, default=256, help="sequence length (a square number)")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  return p


def classification_task():
  """The benchmarks' objective (10-way image classification) and optimizer."""
  obj = objectives.make_objective(
      "cls", dict(type="classification", inputs=("image",), label="label", num_classes=10),
      {"image": "image"})
  ocfg = ml_collections.ConfigDict(dict(learning_rate=1e-4, warmup_steps=1, end_lr_fraction=0.1,
                                        weight_decay=0.0, b1=0.9, b2=0.95, clip_norm=1.0))
  return obj, optim.make_optimizer(ocfg, 1000)


def image_classification(width: int, depth: int, heads: int, tokens: int, dtype: str):
  """(ModelSpec, image side): a dense trunk over `tokens` image patches."""
  side = int(round(tokens ** 0.5)) * PATCH
  spec = ModelSpec(
      modalities={"image": ModalitySpec("image", (side, side, 3), (PATCH,))},
      width=width, depth=depth, num_heads=heads, mlp_dim=4 * width, dtype=dtype,
      heads=Heads(class_heads={"label": 10}))
  return spec, side


def measure(width=512, depth=8, heads=8, tokens=256, batch=16, dtype="float32", steps=5,
            matmul=(1024,)) -> dict:
  spec, side = image_classification(width, depth, heads, tokens, dtype)
  obj, optimizer = classification_task()
  model = build_model(spec, seed=0)
  graphdef, params = nnx.split(model, nnx.Param)
  state = init_state(lambda: params, optimizer)
  rng = np.random.default_rng(0)
  batch_arrays = {"image": jnp.asarray(rng.normal(size=(batch, side, side, 3)), jnp.float32),
                  "label": jnp.asarray(rng.integers(0, 10, batch), jnp.int32)}
  # The reference is measured before and after the step timing: this machine's speed
  # drifts (up to 2x between runs), and the best observed speed is the honest denominator.
  peak_before = perf.measured_peak(dtype, matmul, seconds=1.0)
  step = jax.jit(make_train_step(graphdef, (obj,), optimizer, seed=0), donate_argnums=0)
  compiled = step.lower(state, batch_arrays).compile()
  xla_flops = perf.compiled_flops(compiled)
  state, m = compiled(state, batch_arrays)
  jax.block_until_ready(m)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, m = compiled(state, batch_arrays)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  step_s = statistics.median(times)
  peak = max(peak_before, perf.measured_peak(dtype, matmul, seconds=1.0))
  shapes = {k: v.shape for k, v in batch_arrays.items()}
  analytic = flops_lib.train_step_flops(spec, (obj,), shapes)
  achieved = analytic / step_s
  device = jax.devices()[0]
  nominal = perf.nominal_peak(device.device_kind, dtype)
  return {
      "device": device.device_kind, "dtype": dtype, "width": width, "depth": depth,
      "tokens": tokens, "batch": batch, "step_s": step_s,
      "analytic_flops_per_step": analytic, "xla_flops_per_step": xla_flops,
      "achieved_flops_per_s": achieved, "matmul_flops_per_s": peak, "mfu": achieved / peak,
      "mfu_nominal": achieved / nominal if nominal else None,
      "mfu_xla_count": (xla_flops / step_s / peak) if xla_flops else None,
  }


def main():
  p = add_shape_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--matmul", type=int, nargs="+", default=[1024],
                 help="reference square matmul sizes (the best is used)")
  a = p.parse_args()
  fig = measure(a.width, a.depth, a.heads, a.tokens, a.batch, a.dtype, a.steps, tuple(a.matmul))
  print_figures(fig)


if __name__ == "__main__":
  main()
