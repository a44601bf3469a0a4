"""Cached decoding against recomputing the whole sequence at every step, in one process.

  python benchmarks/decode.py              # CPU: the default NMM model, 16 captions of 48
  python benchmarks/decode.py --batch 1    # latency of one caption

The model: configs/mm_world_nmm.py's early fusion prefix-LM (the image, 16 patch tokens, a
bidirectional prefix; a causal caption of 48 byte tokens) at the size of mm_world's
default model (width 128, depth 4, 4 heads, mlp 512; --width etc. to change), with its
random initial parameters: speed does not depend on what the model has learned. Each row's
prompt is BOS and EOS is never matched, so every row generates 47 tokens, the same work
for both paths. `cached` is mmjax.models.decoding.generate (a prefill pass, then one token
per step against the KV cache); `recompute` is the same loop calling the full forward pass
(model.encode) over the whole text buffer at every step. Each round times both, in an order
shuffled per round (benchmarks/ratios.py); the figures are medians over rounds.

Figures: tokens/s of each path (generated tokens over wall time), `cache_speedup` (the
median per-round ratio of recompute's time to cached time, bar >= 5, with its bootstrap
95% interval), per-token latency (cached wall time per decoding step, for the batch), and
FLOPs: the analytic count of one cached step (mmjax.perf.flops.decode_step_flops, per
example, counting masked keys as computed) beside XLA's count of the compiled step, and of
one recompute step (a full forward pass). The last line is one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.ratios import MIN_ROUNDS, median_ci95, ratio_figures, round_orders, verdict  # noqa: E402
from mmjax import experiment  # noqa: E402
from mmjax.config import recipe  # noqa: E402
from mmjax.models import decoding  # noqa: E402
from mmjax.models.model import build_model  # noqa: E402
from mmjax.models.model_inputs import ModelInputs  # noqa: E402
from mmjax.perf import flops as flops_lib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BAR = 5.0


def model_spec(a):
  config = recipe.load(os.path.join(ROOT, "configs", "mm_world_nmm.py") + ":" + a.variant)
  for key in ("width", "depth", "num_heads", "mlp_dim"):
    recipe.apply_override(config, f"model.{key}={getattr(a, key)}")
  recipe.apply_override(config, f"model.dtype={a.dtype}")
  return experiment.parse(config).model


def decoders(spec, batch: int, seed: int = 0):
  """{path: jitted fn(state) -> Generation}, the model's state, and the text length."""
  model = build_model(spec, seed)
  graphdef, state = nnx.split(model)
  n = spec.modalities["text"].shape[0]
  image = jnp.asarray(np.random.default_rng(0).normal(size=(batch,) + spec.modalities["image"].shape),
                      jnp.float32)
  context = ModelInputs(inputs={"image": image})
  ids = jnp.ones((batch, n), jnp.int32)  # BOS, then anything: only position 0 is prompt
  lens = jnp.ones((batch,), jnp.int32)

  def fn(cached):
    return jax.jit(lambda state: decoding.generate(
        nnx.merge(graphdef, state), context, ids, lens, modality="text", head="next_text",
        eos_id=-1, cached=cached))
  return {"cached": fn(True), "recompute": fn(False)}, state, model, n


def xla_step_flops(model, spec, batch: int) -> float:
  """XLA's count of one compiled cached step, per example."""
  n = spec.modalities["text"].shape[0]
  p = spec.modalities["image"].num_tokens()
  h, k = spec.num_heads, spec.width // spec.num_heads
  layer = jnp.zeros((batch, p + n, h, k))
  cache = decoding.KVCache(k=(layer,) * spec.depth, v=(layer,) * spec.depth,
                           prefix_valid=jnp.ones((batch, p), bool))
  graphdef, state = nnx.split(model)
  step = jax.jit(lambda state, cache, ids, t: decoding.step(
      nnx.merge(graphdef, state), cache, ids, t, "text", "next_text"))
  cost = step.lower(state, cache, jnp.ones((batch,), jnp.int32), 3).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan"))) / batch


def time_rounds(fns, state, rounds: int, reps: int, seed: int) -> dict:
  times = {k: [] for k in fns}
  for order in round_orders(list(fns), rounds, seed):
    for name in order:
      start = time.perf_counter()
      for _ in range(reps):
        jax.block_until_ready(fns[name](state).ids)
      times[name].append((time.perf_counter() - start) / reps)
  return times


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--variant", default="tiny_early", help="of configs/mm_world_nmm.py (the "
                 "trunk and modalities; the size is set by the flags below)")
  p.add_argument("--width", type=int, default=128)
  p.add_argument("--depth", type=int, default=4)
  p.add_argument("--num_heads", type=int, default=4)
  p.add_argument("--mlp_dim", type=int, default=512)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--rounds", type=int, default=MIN_ROUNDS)
  p.add_argument("--reps", type=int, default=2, help="decodes per path per round")
  p.add_argument("--seed", type=int, default=0, help="of the per-round order")
  a = p.parse_args()

  spec = model_spec(a)
  fns, state, model, n = decoders(spec, a.batch)
  compile_s = {}
  for name, fn in fns.items():
    start = time.perf_counter()
    out = jax.block_until_ready(fn(state))
    compile_s[name] = time.perf_counter() - start
  generated = a.batch * (n - 1)
  assert int(np.asarray(out.length).min()) == n, "every row must run to the end of the buffer"
  ref, cached = fns["recompute"](state), fns["cached"](state)
  same_tokens = bool(np.array_equal(np.asarray(ref.ids), np.asarray(cached.ids)))
  times = time_rounds(fns, state, a.rounds, a.reps, a.seed)
  speed = ratio_figures(times["recompute"], times["cached"], prefix="cache_speedup_")
  cached_s, _ = median_ci95(times["cached"])
  recompute_s, _ = median_ci95(times["recompute"])
  p_tokens = spec.modalities["image"].num_tokens()
  step_flops = flops_lib.decode_step_flops(spec, p_tokens, n)
  embed, blocks = flops_lib.trunk_pass_flops(spec, {"image": p_tokens, "text": n})
  full_pass = embed + blocks + 2.0 * n * spec.width * spec.modalities["text"].vocab_size
  figures = {
      "model": {k: getattr(a, k) for k in ("variant", "width", "depth", "num_heads",
                                           "mlp_dim", "dtype")},
      "device": jax.devices()[0].device_kind, "batch": a.batch, "caption_length": n,
      "prefix_tokens": p_tokens, "generated_tokens": generated,
      "cached_tokens_per_s": generated / cached_s,
      "recompute_tokens_per_s": generated / recompute_s,
      "cache_speedup": speed["cache_speedup_ratio"],
      "cache_speedup_ci95": speed["cache_speedup_ratio_ci95"],
      "cache_speedup_rounds": speed["cache_speedup_ratio_rounds"],
      "cache_speedup_bar": BAR,
      "cache_speedup_verdict": verdict(speed["cache_speedup_ratio_ci95"], BAR, "higher"),
      "per_token_latency_ms": 1e3 * cached_s / (n - 1),
      "recompute_per_token_latency_ms": 1e3 * recompute_s / (n - 1),
      "decode_step_flops_per_example": step_flops,
      "decode_step_flops_xla_per_example": xla_step_flops(model, spec, a.batch),
      "recompute_step_flops_per_example": full_pass,
      "cached_decode_flops_per_s": step_flops * generated / cached_s,
      "same_tokens": same_tokens, "compile_s": compile_s, "rounds": a.rounds, "reps": a.reps,
  }
  print(f"cached    {figures['cached_tokens_per_s']:10.1f} tokens/s  "
        f"{figures['per_token_latency_ms']:.2f} ms/step (batch {a.batch})")
  print(f"recompute {figures['recompute_tokens_per_s']:10.1f} tokens/s  "
        f"{figures['recompute_per_token_latency_ms']:.2f} ms/step")
  print(f"cache_speedup {figures['cache_speedup']:.2f} (95% {figures['cache_speedup_ci95']}) "
        f"bar >= {BAR}: {figures['cache_speedup_verdict']}")
  print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
  main()
