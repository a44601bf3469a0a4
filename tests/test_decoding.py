"""Cached decoding (mmjax/models/decoding.py): the KV cache equals recomputing the whole
sequence (same tokens, logits within 1e-5 in float32) for early prefix-LM and late fusion,
for greedy and sampled decoding, prompts of different lengths and EOS; sampling's top-k
against numpy; the refusals; one step's analytic FLOPs against XLA's count."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmjax.config.registry import FieldError
from mmjax.models import decoding
from mmjax.models.decoding import Sampling
from mmjax.models.embedders import ModalitySpec
from mmjax.models.ffn.moe import MoeConfig
from mmjax.models.ffn.mlp import MlpConfig
from mmjax.models.model import build_model
from mmjax.models.model_inputs import ModelInputs
from mmjax.models.spec import Heads, ModelSpec
from mmjax.models.trunks.bottleneck import BottleneckFusionConfig
from mmjax.models.trunks.early import EarlyFusionConfig
from mmjax.models.trunks.late_decoder import LateDecoderConfig

VOCAB, N_TEXT, EOS = 13, 10, 2
SPECS = {"image": ModalitySpec("image", (8, 8, 3), (4,)),
         "text": ModalitySpec("text", (N_TEXT,), (), VOCAB)}


def make_model(fusion, ffn=MlpConfig(), posemb="learn"):
  spec = ModelSpec(modalities=SPECS, width=16, depth=2, num_heads=2, mlp_dim=32,
                   fusion=fusion, ffn=ffn, posemb=posemb, dtype="float32",
                   heads=Heads(decoders={"next": "text"}))
  return build_model(spec, 0)


def prompts(b=3):
  rng = np.random.default_rng(0)
  image = jnp.asarray(rng.normal(size=(b, 8, 8, 3)), jnp.float32)
  ids = jnp.asarray(rng.integers(3, VOCAB, size=(b, N_TEXT)), jnp.int32).at[:, 0].set(1)
  return ModelInputs(inputs={"image": image}), ids, jnp.asarray([1, 3, 2][:b], jnp.int32)


def run(model, cached, sampling=Sampling(), eos=EOS):
  graphdef, state = nnx.split(model)
  return jax.device_get(_go(model, graphdef, cached, sampling)(state, jax.random.key(3), eos))


_COMPILED = {}


def _go(model, graphdef, cached, sampling):
  """One compile per model, path and sampling (EOS is an argument). The entry keeps the
  model alive, so its id is never reused while cached."""
  key = (id(model), cached, sampling)
  if key not in _COMPILED:
    context, ids, lens = prompts()

    @jax.jit
    def go(state, rng, eos):
      return decoding.generate(nnx.merge(graphdef, state), context, ids, lens,
                               modality="text", head="next", eos_id=eos, sampling=sampling,
                               rng=rng, cached=cached)
    _COMPILED[key] = (model, go)
  return _COMPILED[key][1]


FUSIONS = {"early": EarlyFusionConfig(), "late_decoder": LateDecoderConfig(encoder_depth=1)}


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("sampling", [Sampling(), Sampling(temperature=1.5, top_k=5)],
                         ids=["greedy", "top5"])
def test_cache_equals_recompute(fusion, sampling):
  model = make_model(FUSIONS[fusion])
  # eos = -1: no row stops, so every position of the buffer is generated and compared.
  for eos in (-1, EOS):
    fast, slow = run(model, True, sampling, eos), run(model, False, sampling, eos)
    np.testing.assert_array_equal(fast.ids, slow.ids)
    np.testing.assert_array_equal(fast.length, slow.length)
    np.testing.assert_allclose(fast.logits, slow.logits, atol=1e-5, rtol=0)
  assert np.abs(fast.logits[:, -2]).sum() > 0  # the last scoring position was computed
  _, ids, lens = prompts()
  for b, n in enumerate(np.asarray(lens)):  # prompts are kept
    np.testing.assert_array_equal(fast.ids[b, :n], np.asarray(ids)[b, :n])


def test_cache_equals_recompute_sincos_and_dropless_moe():
  moe = MoeConfig(num_experts=4, top_k=1, routing="dropless")
  fast, slow = (run(make_model(EarlyFusionConfig(), ffn=moe, posemb="sincos"), c, eos=-1)
                for c in (True, False))
  np.testing.assert_array_equal(fast.ids, slow.ids)
  np.testing.assert_allclose(fast.logits, slow.logits, atol=1e-5, rtol=0)


def test_greedy_logits_equal_one_full_forward_pass_over_the_result():
  """The logits that chose each token are the ordinary forward pass's over the final text."""
  model = make_model(FUSIONS["early"])
  out = run(model, True, eos=-1)
  context, _, _ = prompts()
  x = context.replace(inputs=dict(context.inputs, text=jnp.asarray(out.ids)), causal=("text",))
  full = np.asarray(model.decode(model.encode(x).tokens["text"], "next"))
  np.testing.assert_allclose(out.logits[:, :-1], full[:, :-1], atol=1e-5, rtol=0)
  generated = np.argmax(full[:, :-1], -1)
  _, _, lens = prompts()
  for b, n in enumerate(np.asarray(lens)):
    np.testing.assert_array_equal(out.ids[b, n:], generated[b, n - 1:])


def test_stops_at_eos_and_pads_after_it():
  model = make_model(FUSIONS["early"])
  free = run(model, True, eos=-1)
  _, ids, lens = prompts()
  ids, lens = np.asarray(ids), np.asarray(lens)
  eos = int(free.ids[1, lens[1] + 1])  # the second generated token of row 1 becomes its EOS
  out = run(model, True, eos=eos)
  np.testing.assert_array_equal(out.ids[:, :2], free.ids[:, :2])  # before any EOS: the same
  for r in range(3):
    hits = np.flatnonzero(out.ids[r, 1:] == eos)
    first = hits[0] + 1 if len(hits) else None
    assert out.length[r] == (first + 1 if first is not None else N_TEXT)
    if first is None:
      continue
    for p in range(first + 1, N_TEXT):  # after EOS: the rest of the prompt, then padding
      assert out.ids[r, p] == (ids[r, p] if p < lens[r] else 0)
  assert out.length[1] <= lens[1] + 2


def test_sample_top_k_against_numpy():
  logits = jnp.asarray([[0.0, 2.0, 1.0, -1.0, 1.5]], jnp.float32)
  rngs = jax.random.split(jax.random.key(0), 4000)
  draws = np.asarray(jax.vmap(lambda r: decoding.sample(
      logits, r, Sampling(temperature=2.0, top_k=3)))(rngs))[:, 0]
  keep = np.array([1, 2, 4])
  p = np.exp(np.asarray(logits[0, keep]) / 2.0)
  p /= p.sum()
  freq = np.array([(draws == k).mean() for k in keep])
  assert set(np.unique(draws)) <= set(keep)
  np.testing.assert_allclose(freq, p, atol=0.03)
  assert int(decoding.sample(logits, rngs[0], Sampling())[0]) == 1


@pytest.mark.parametrize("kw, field", [(dict(temperature=-1.0), "temperature"),
                                       (dict(top_k=-2, temperature=1.0), "top_k"),
                                       (dict(top_k=3), "top_k")])
def test_bad_sampling_is_refused(kw, field):
  with pytest.raises(FieldError) as e:
    Sampling(**kw)
  assert e.value.field == field


def test_a_trunk_without_a_causal_stack_is_refused():
  model = make_model(BottleneckFusionConfig())
  context, ids, lens = prompts()
  with pytest.raises(ValueError, match="no causal stack"):
    decoding.generate(model, context, ids, lens, modality="text", head="next", eos_id=EOS)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_decode_step_flops_agree_with_xla(fusion):
  """The analytic FLOPs of one cached step (mmjax.perf.flops) within 5% of XLA's count."""
  from mmjax.perf.flops import decode_step_flops
  model = make_model(FUSIONS[fusion])
  context, ids, lens = prompts()
  buffer = context.replace(inputs=dict(context.inputs, text=ids), causal=("text",))
  _, cache = decoding.prefill(model, buffer, "text", "next")
  graphdef, state = nnx.split(model)
  fn = jax.jit(lambda state, cache, tok, t: decoding.step(
      nnx.merge(graphdef, state), cache, tok, t, "text", "next"))
  cost = fn.lower(state, cache, ids[:, 0], 2).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  xla = cost["flops"] / ids.shape[0]
  analytic = decode_step_flops(model.spec, prefix_tokens=4, text_len=N_TEXT)
  assert abs(analytic / xla - 1) < 0.05, (analytic, xla)
