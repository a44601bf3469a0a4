"""Per-family accounting (mmjax/scaling/accounting.py): NMM's encoder/decoder split of the
parameters and its C = 6(N_enc D_enc + N_dec D_dec), from abstract shapes only."""
import os

import pytest

from mmjax.scaling import accounting, counts
from tests.conftest import ROOT

NMM = os.path.join(ROOT, "configs", "mm_world_nmm.py")


def _counts(variant, *overrides, examples=1000):
  exp = counts.loaded(f"{NMM}:{variant}", list(overrides))
  return exp, accounting.family_counts(exp, examples)


def test_late_fusion_splits_its_parameters_and_counts_the_encoder_on_image_tokens_only():
  exp, late = _counts("tiny_late")
  assert late["family"] == "late"
  assert late["params_encoder"] + late["params_decoder"] == counts.param_count(exp)
  # One more encoder block adds to N_enc exactly what one more decoder block adds to N_dec.
  _, deeper_encoder = _counts("tiny_late", "model.fusion.encoder_depth=2")
  _, deeper_decoder = _counts("tiny_late", "model.depth=2")
  block = deeper_encoder["params_encoder"] - late["params_encoder"]
  assert block > 0 and deeper_encoder["params_decoder"] == late["params_decoder"]
  assert deeper_decoder["params_decoder"] - late["params_decoder"] == block
  image, text = 16 * 1000, 48 * 1000  # 32x32 images in 8x8 patches; 48 caption bytes
  assert (late["tokens_encoder"], late["tokens_decoder"]) == (image, image + text)
  assert late["flops_nmm"] == 6 * (late["params_encoder"] * image
                                   + late["params_decoder"] * (image + text))
  assert late["flops_nmm"] < late["flops_6nd"]


def test_early_fusion_is_6nd_and_moe_is_a_family_of_its_own():
  exp, early = _counts("tiny_early")
  assert early["family"] == "early" and early["params_encoder"] == 0
  assert early["flops_nmm"] == early["flops_6nd"] == pytest.approx(
      6 * counts.param_count(exp) * 64 * 1000)
  exp, moe = _counts("tiny_early", "model.ffn.type=moe", "model.ffn.top_k=1",
                     "model.ffn.num_experts=4")
  assert moe["family"] == "early_moe"
  # A token uses 1 expert of 4: N is the active count, as the trainer logs it.
  total = counts.param_count(exp)
  assert total - moe["active_params"] == 3 * 2 * 32 * 64 + 3 * (64 + 32)  # 3 idle experts
  assert moe["flops_nmm"] == moe["flops_6nd"] == 6 * moe["active_params"] * 64 * 1000
