"""Accounting: the analytic FLOPs of a step against XLA's own count of the compiled step
(CPU), each objective's trunk passes, and the MFU peak (nominal or the host's, never
multiplied by fake CPU devices)."""
from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from mmjax import objectives as objectives_lib
from mmjax.experiment import build
from mmjax.config import recipe as config_lib
from mmjax import experiment
from mmjax.training import optimizer as optim
from mmjax.perf import peak as perf
from mmjax.models.model import build_model
from mmjax.perf import flops
from mmjax.training.step import init_state, make_train_step
from tests.conftest import ROOT, TINY

WIDTH_128 = ["model.width=128", "model.num_heads=4", "model.mlp_dim=512", "model.embed_dim=128"]
KINDS = {"image": "image", "video": "video", "audio": "audio", "text": "text"}
MASKED = {"mt": dict(type="masked", modality="text", ratio=0.5),
          "mi": dict(type="masked", modality="image", ratio=0.5)}


def analytic_and_xla(overrides, objectives_cfg=None, batch=16):
  config = experiment.load(TINY, overrides)
  objs = build.task_objectives(config)["default"]
  if objectives_cfg is not None:
    objs = objectives_lib.make_objectives(objectives_cfg, KINDS)
  spec = build.model_spec(config, {"default": objs})
  optimizer = optim.make_optimizer(config.optim, config.total_steps)
  graphdef, params = nnx.split(build_model(spec, 0), nnx.Param)
  state = jax.eval_shape(lambda: init_state(lambda: params, optimizer))
  shapes = {m: (batch, *tuple(s.shape)) for m, s in config.model.modalities.items()}
  shapes.update(text_mask=shapes["text"], label=(batch,), content_id=(batch,))
  dtypes = {"text": jnp.int32, "label": jnp.int32, "content_id": jnp.int32, "text_mask": jnp.bool_}
  abstract_batch = {k: jax.ShapeDtypeStruct(s, dtypes.get(k, jnp.float32))
                    for k, s in shapes.items()}
  # Unsharded: one device, whatever the test's device count, so XLA counts the whole step.
  compiled = jax.jit(make_train_step(graphdef, objs, optimizer, 0)).lower(
      state, abstract_batch).compile()
  return flops.train_step_flops(spec, objs, shapes), perf.compiled_flops(compiled)


@pytest.mark.parametrize("overrides, objectives_cfg", [
    (WIDTH_128, None),                          # contrastive (2 passes) + classification
    (WIDTH_128 + ["model.depth=2"], None),
    (WIDTH_128, MASKED),                         # masked text (vocab decoder) and image
])
def test_analytic_flops_agree_with_xla_within_3_percent_at_width_128(overrides, objectives_cfg):
  analytic, xla = analytic_and_xla(overrides, objectives_cfg)
  assert xla > 0
  assert abs(analytic / xla - 1) < 0.03, (analytic, xla)


MATCH = {"match": dict(type="matching", inputs=("video", "audio"))}


@pytest.mark.parametrize("overrides, objectives_cfg", [
    (WIDTH_128 + ["model.depth=2", "model.fusion.type=bottleneck", "model.fusion.fusion_layer=1",
                  "model.fusion.num_bottlenecks=4"], MATCH),
    (WIDTH_128 + ["model.fusion.type=late"], MATCH),
    (WIDTH_128 + ["model.fusion.type=bottleneck", "model.fusion.share_weights=False"], None),
    (["model.width=64", "model.num_heads=2", "model.mlp_dim=256", "model.embed_dim=64"], None),
    (["model.width=256", "model.num_heads=4", "model.mlp_dim=1024", "model.embed_dim=128",
      "model.fusion.type=late"], None),
])
def test_analytic_flops_of_every_trunk_agree_with_xla(overrides, objectives_cfg):
  """Bottleneck and late fusion counted as they run (per-stream sequences, bottleneck
  tokens), at widths 64-256, against XLA's count of the compiled CPU step."""
  analytic, xla = analytic_and_xla(overrides, objectives_cfg)
  assert abs(analytic / xla - 1) < 0.05, (analytic, xla)


NEXT_TOKEN = {"nt": dict(type="next_token", modality="text", context=("image",))}


@pytest.mark.parametrize("overrides, objectives_cfg", [
    (WIDTH_128, NEXT_TOKEN),                                       # early: a prefix-LM
    (WIDTH_128 + ["model.fusion.type=late_decoder", "model.fusion.encoder_depth=2"],
     NEXT_TOKEN),                                                   # NMM's late fusion
    (WIDTH_128 + ["model.fusion.type=late_decoder"],
     {"nt": dict(type="next_token", modality="text", context=("image",), tied=True,
                 z_loss=1e-4),
      "mt": dict(type="masked", modality="text", ratio=0.5)}),
])
def test_analytic_flops_of_causal_trunks_agree_with_xla(overrides, objectives_cfg):
  """Causal and prefix-LM attention are counted as the full square that runs (perf/flops.py
  says why), which is what XLA counts too."""
  analytic, xla = analytic_and_xla(overrides, objectives_cfg)
  assert abs(analytic / xla - 1) < 0.05, (analytic, xla)


def test_late_decoder_runs_the_decoder_over_everything_and_each_encoder_over_its_own():
  late = build.model_spec(experiment.load(TINY, ["model.fusion.type=late_decoder",
                                                 "model.fusion.encoder_depth=2"])).fusion
  assert late.layer_sequences({"image": 16, "text": 48}, 1) == [[64, 16], [16]]
  assert late.layer_sequences({"image": 16, "text": 48}, 3) == [[64, 16], [64, 16], [64]]


def test_bottleneck_attention_is_the_streams_not_the_joint_sequence():
  config = experiment.load(TINY, ["model.fusion.type=bottleneck", "model.fusion.num_bottlenecks=4"])
  spec = build.model_spec(config)
  assert spec.fusion.layer_sequences({"video": 32, "audio": 16}, 2) == [[36, 20], [36, 20]]
  late = build.model_spec(experiment.load(TINY, ["model.fusion.type=late"])).fusion
  assert late.layer_sequences({"video": 32, "audio": 16}, 1) == [[32, 16]]


def test_every_trunk_pass_of_each_objective_is_counted():
  objs = objectives_lib.make_objectives({
      "ti": dict(type="contrastive", a="text", b="image"),
      "cls": dict(type="classification", inputs=("video", "audio"), num_classes=3),
      "mt": dict(type="masked", modality="text")}, KINDS)
  assert [o.forward_passes() for o in objs] == [(("text",), ("image",)),
                                                (("video", "audio"),), (("text",),)]
  config = experiment.load(TINY)
  spec = build.model_spec(config, {"default": objs})
  shapes = {"text": (8, 48), "image": (8, 32, 32, 3), "video": (8, 4, 16, 16, 3),
            "audio": (8, 32, 32)}
  # Separate passes cost less attention than one joint pass over the same tokens.
  joint = objectives_lib.make_objectives(
      {"cls": dict(type="classification", inputs=("text", "image"), num_classes=3)}, KINDS)
  apart = objectives_lib.make_objectives(
      {"ti": dict(type="contrastive", a="text", b="image")}, KINDS)
  trunk = lambda objectives: sum(
      sum(flops.trunk_pass_flops(spec, flops.pass_tokens(spec, g, shapes)))
      for o in objectives for g in o.forward_passes())
  length, d = 48 + 16, spec.width
  saved = spec.depth * (4 * d + 5 * spec.num_heads) * (length ** 2 - 48 ** 2 - 16 ** 2)
  assert trunk(joint) - trunk(apart) == pytest.approx(saved)
  # Tokens come from the batch's shapes: a bigger image is more tokens.
  bigger = dict(shapes, image=(8, 64, 64, 3))
  assert flops.tokens_per_step(spec, objs, bigger) - flops.tokens_per_step(spec, objs, shapes) \
      == 8 * (64 - 16)


@dataclasses.dataclass
class Device:
  device_kind: str


def test_the_cpu_peak_is_the_hosts_not_times_the_fake_device_count():
  host = lambda: 1e11
  one = perf.job_peak([Device("cpu")], "float32", measure=host)
  eight = perf.job_peak([Device("cpu")] * 8, "float32", measure=host)
  assert one.flops_per_s == eight.flops_per_s == 1e11 and not eight.nominal
  assert "measured" in eight.source
  # The real fake devices of the test run (8 of them: tests/conftest.py).
  assert perf.job_peak(jax.devices(), "float32", measure=host).flops_per_s == 1e11


@pytest.mark.parametrize("kind, dtype, per_device", [
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989e12), ("NVIDIA H200", "bfloat16", 989e12),
    ("NVIDIA A100-SXM4-40GB", "bfloat16", 312e12), ("TPU v4", "bfloat16", 275e12),
    ("TPU v5 lite", "bfloat16", 197e12), ("TPU v5p", "bfloat16", 459e12)])
def test_known_devices_use_the_nominal_peak_times_the_device_count(kind, dtype, per_device):
  peak = perf.job_peak([Device(kind)] * 8, dtype, measure=lambda: pytest.fail("measured"))
  assert peak.flops_per_s == 8 * per_device and peak.nominal and kind in peak.source


def test_active_parameters_leave_out_the_experts_a_token_is_not_sent_to():
  from mmjax.training.step import abstract_train_state
  counts = {}
  for variant in ("tiny_early", "tiny_early_moe"):
    config = experiment.load(TINY.replace("mm_world.py:tiny", f"mm_world_fusion.py:{variant}"))
    spec = build.model_spec(config)
    _, _, abstract = abstract_train_state(spec, config.seed, optim.make_optimizer(config.optim, 10))
    total = flops.param_count(abstract.params)
    counts[variant] = (total, flops.active_param_count(spec, total), spec)
  total, active, _ = counts["tiny_early"]
  assert active == total
  total, active, spec = counts["tiny_early_moe"]
  ffn = spec.ffn
  expert = 2 * spec.width * spec.mlp_dim + spec.mlp_dim + spec.width   # one expert's MLP
  moe_layers = sum(ffn.is_moe_layer(i) for i in range(spec.depth))
  assert total - active == moe_layers * (ffn.num_experts - ffn.top_k) * expert


def test_analytic_flops_of_a_packed_row_agree_with_xla():
  """A packed row (mmjax/data/packing.py) is one sequence of its slots' image tokens and its
  text length, each token counted once; XLA counts the same compiled step."""
  config = experiment.load(os.path.join(ROOT, "configs", "mm_world_nmm.py") + ":tiny_early_packed",
                           WIDTH_128)
  exp = experiment.parse(config)
  objs, spec = exp.tasks["default"].objectives, exp.model
  optimizer = optim.make_optimizer(config.optim, config.total_steps)
  graphdef, params = nnx.split(build_model(spec, 0), nnx.Param)
  state = jax.eval_shape(lambda: init_state(lambda: params, optimizer))
  packing = config.tasks.default.data.packing
  b, slots, length = 8, packing.images, packing.length
  shapes = {"image": (b, slots, 32, 32, 3), "image_segment": (b, slots), "image_order": (b, slots),
            "text": (b, length), "text_mask": (b, length), "text_segment": (b, length),
            "text_order": (b, length), "text_position": (b, length)}
  dtypes = {"image": jnp.float32, "text_mask": jnp.bool_}
  abstract_batch = {k: jax.ShapeDtypeStruct(s, dtypes.get(k, jnp.int32)) for k, s in shapes.items()}
  compiled = jax.jit(make_train_step(graphdef, objs, optimizer, 0)).lower(
      state, abstract_batch).compile()
  analytic, xla = flops.train_step_flops(spec, objs, shapes), perf.compiled_flops(compiled)
  assert flops.tokens_per_step(spec, objs, shapes) == b * (slots * 16 + length)
  assert abs(analytic / xla - 1) < 0.05, (analytic, xla)
