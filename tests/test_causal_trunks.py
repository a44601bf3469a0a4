"""Attention kinds in the trunks: no future leakage under causal and prefix-LM attention in
every trunk that accepts a causal objective, and the prefix-LM's visibility.

Leakage is measured as the gradient of the next-token loss at text position t with respect
to the trunk's input embeddings (the embedders' outputs, which the model orders: its
`trunk_inputs`), reduced to |d loss_t / d token_k| summed over the batch and width."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmjax.models.embedders import ModalitySpec
from mmjax.models.ffn.mlp import MlpConfig
from mmjax.models.ffn.moe import MoeConfig
from mmjax.models.model import build_model
from mmjax.models.model_inputs import ModelInputs
from mmjax.models.spec import Heads, ModelSpec
from mmjax.models.token_info import TokenInfo
from mmjax.models.trunks.bottleneck import BottleneckFusionConfig, LateFusionConfig
from mmjax.models.trunks.early import EarlyFusionConfig
from mmjax.models.trunks.late_decoder import LateDecoderConfig

SPECS = {"image": ModalitySpec("image", (8, 8, 3), (4,)),   # 4 tokens
         "text": ModalitySpec("text", (6,), (), 11)}
N_IMAGE, N_TEXT = 4, 6


def make_model(fusion, order=("image", "text"), ffn=MlpConfig()):
  spec = ModelSpec(modalities={m: SPECS[m] for m in order}, width=16, depth=2, num_heads=2,
                   mlp_dim=32, fusion=fusion, ffn=ffn, heads=Heads(decoders={"next": "text"}))
  return build_model(spec, 0)


def inputs(modalities, causal=("text",)):
  rng = np.random.default_rng(0)
  values = {"image": jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32),
            "text": jnp.asarray(rng.integers(0, 11, size=(2, N_TEXT)), jnp.int32)}
  return ModelInputs(inputs={m: values[m] for m in modalities}, causal=causal)


def sensitivities(model, x: ModelInputs, of: str):
  """{modality k: [n_of, n_k]}: |d f_q / d token k|, where f_q is the next-token loss at
  text position q (of="loss") or a fixed projection of modality `of`'s output q."""
  graphdef, state = nnx.split(model)

  def per_position(state, deltas):
    m = nnx.merge(graphdef, state)
    tokens, infos = m.trunk_inputs(x, {})
    out, _ = m.trunk({k: tokens[k] + deltas[k] for k in tokens}, infos)
    if of == "loss":
      ids = x.inputs["text"]
      logp = jax.nn.log_softmax(m.decode(out["text"], "next")[:, :-1])
      return -jnp.take_along_axis(logp, ids[:, 1:, None], -1)[..., 0].sum(0)  # [N-1]
    w = jax.random.normal(jax.random.key(1), out[of].shape[1:])
    return jnp.sum(out[of] * w, axis=(0, 2))

  tokens, _ = nnx.merge(graphdef, state).trunk_inputs(x, {})
  deltas = {k: jnp.zeros_like(v) for k, v in tokens.items()}
  jac = jax.jit(jax.jacrev(per_position, argnums=1))(state, deltas)
  return {k: np.abs(np.asarray(j)).sum(axis=(1, 3)) for k, j in jac.items()}


CAUSAL_CASES = {
    "early prefix-LM": (EarlyFusionConfig(), ("image", "text"), MlpConfig()),
    "early prefix-LM, text first in model.modalities": (
        EarlyFusionConfig(), ("text", "image"), MlpConfig()),
    "early text alone": (EarlyFusionConfig(), ("text",), MlpConfig()),
    "early prefix-LM, dropless MoE": (
        EarlyFusionConfig(), ("image", "text"), MoeConfig(num_experts=4, top_k=2)),
    "early prefix-LM, token-choice MoE": (
        EarlyFusionConfig(), ("image", "text"),
        MoeConfig(num_experts=4, top_k=1, routing="token_choice")),
    "late_decoder prefix-LM": (LateDecoderConfig(encoder_depth=1), ("image", "text"),
                               MlpConfig()),
    "late_decoder text alone": (LateDecoderConfig(), ("text",), MlpConfig()),
    "late text alone": (LateFusionConfig(), ("text",), MlpConfig()),
    "bottleneck text alone": (BottleneckFusionConfig(fusion_layer=0), ("text",), MlpConfig()),
}


@pytest.mark.parametrize("case", list(CAUSAL_CASES))
def test_no_future_leakage(case):
  fusion, passed, ffn = CAUSAL_CASES[case]
  model = make_model(fusion, ffn=ffn,
                     order=("text", "image") if "text first" in case else ("image", "text"))
  s = sensitivities(model, inputs(passed), of="loss")
  text = s["text"]                                   # [loss position t, input position k]
  later = np.triu(np.ones_like(text, bool), k=1)     # k > t
  assert np.all(text[later] == 0.0), text            # exactly: no path at all
  assert np.all(text[~later] > 0.0), text            # and the past is seen
  if "image" in passed:
    assert np.all(s["image"] > 0.0)                  # every text position sees the prefix


def test_the_leakage_test_sees_leaks():
  s = sensitivities(make_model(EarlyFusionConfig()), inputs(("image", "text"), ()), of="loss")
  assert np.any(np.triu(s["text"], k=1) > 0.0)  # bidirectional text: what causal removes


def test_causal_text_in_bottleneck_fusion_never_sees_the_other_stream():
  """Why validation refuses a causal objective with context on bottleneck fusion: the
  bottleneck tokens follow the stream's tokens, so causal text never reads them. Nothing
  leaks, and nothing fuses."""
  model = make_model(BottleneckFusionConfig(fusion_layer=0))
  s = sensitivities(model, inputs(("image", "text")), of="loss")
  assert np.all(np.triu(s["text"], k=1) == 0.0)
  assert np.all(s["image"] == 0.0)


def _expected_prefix_lm_mask():
  n = N_IMAGE + N_TEXT
  mask = np.zeros((n, n), bool)
  mask[:N_IMAGE, :N_IMAGE] = True                      # the prefix sees itself both ways
  mask[N_IMAGE:, :N_IMAGE] = True                      # text sees the whole prefix ...
  mask[N_IMAGE:, N_IMAGE:] = np.tril(np.ones((N_TEXT, N_TEXT), bool))  # ... and its past
  return mask


@pytest.mark.parametrize("order", [("image", "text"), ("text", "image")])
def test_prefix_lm_mask_puts_the_bidirectional_prefix_first(order):
  model = make_model(EarlyFusionConfig(), order=order)
  tokens, infos = model.trunk_inputs(inputs(("image", "text")), {})
  assert list(tokens) == ["image", "text"]
  mask = TokenInfo.concat([infos[m] for m in tokens]).attention_mask()
  np.testing.assert_array_equal(mask[0, 0], _expected_prefix_lm_mask())
  np.testing.assert_array_equal(mask[1, 0], _expected_prefix_lm_mask())


@pytest.mark.parametrize("fusion", [EarlyFusionConfig(), LateDecoderConfig(encoder_depth=1)],
                         ids=["early", "late_decoder"])
def test_prefix_tokens_see_each_other_both_ways_and_never_the_text(fusion):
  model = make_model(fusion)
  s = sensitivities(model, inputs(("image", "text")), of="image")
  assert np.all(s["image"] > 0.0)   # [image output q, image input k]: both directions
  assert np.all(s["text"] == 0.0)   # the prefix never sees the text after it
  s = sensitivities(model, inputs(("image", "text")), of="text")
  assert np.all(s["image"] > 0.0)   # each text output sees the whole prefix
  later = np.triu(np.ones((N_TEXT, N_TEXT), bool), k=1)
  assert np.all(s["text"][later] == 0.0) and np.all(s["text"][~later] > 0.0)
