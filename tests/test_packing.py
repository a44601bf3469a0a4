"""Packed rows (mmjax/data/packing.py): a packed example scores as it does alone, examples
of one row never see each other (outputs, gradients), interleaved documents see only their
past, the packed stream resumes exactly, bad settings are refused, and accounting counts a
packed row's tokens once."""
import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import experiment
from mmjax.data import packing, pipeline
from mmjax.errors import ConfigError
from mmjax.models.model import build_model
from mmjax.models.model_inputs import model_inputs
from mmjax.objectives.next_token import target_weights, token_xent
from mmjax.perf import flops
from tests.conftest import ROOT

NMM = os.path.join(ROOT, "configs", "mm_world_nmm.py")
HEAD = "next_text"
PAIRS = packing.PackingConfig(length=144, images=3)
DOCS = packing.PackingConfig(length=144, images=3, kind="interleaved", pairs_per_document=2)


def _exp(world_dir, variant="tiny_early_packed", *overrides, edit=None):
  config = experiment.load(f"{NMM}:{variant}",
                           [f"tasks.default.data.data_dir={world_dir}", *overrides])
  if edit:
    with config.unlocked():
      edit(config)
  return experiment.parse(config)


@pytest.fixture(scope="module")
def setup(world_dir):
  """The tiny packed recipe's model (float32 on CPU) and 6 unpacked test examples."""
  exp = _exp(world_dir)
  model = build_model(exp.model, 0)
  batch = next(pipeline.iter_eval_batches(exp.tasks["default"].data, split="test",
                                          batch_size=6))
  batch = {k: v for k, v in batch.items() if k in ("image", "text", "text_mask")}
  return model, batch


def _pack(cfg, batch, n):
  """The first n examples as documents, first-fit packed into one row by grain."""
  k = cfg.pairs
  docs = [packing.document(cfg, {key: v[j * k:(j + 1) * k] for key, v in batch.items()})
          for j in range(n // k)]
  rows = packing.packed_rows(grain.MapDataset.source(docs).to_iter_dataset(), cfg, 1)
  return packing.batch_keys(cfg, next(iter(rows.batch(1))))


def _encode(model, batch):
  x = model_inputs({k: jnp.asarray(v) for k, v in batch.items()}, ("image", "text"))
  return model.encode(x.replace(causal=("text",)))


def _xent(model, batch):
  """(per-target cross-entropy [B, N-1], target weights [B, N-1]) of the next-token head."""
  enc = _encode(model, batch)
  ids = jnp.asarray(batch["text"])
  xent = token_xent(model.decode(enc.tokens["text"], HEAD), ids, jnp.ones(ids.shape, bool))[0]
  segment = batch.get("text_segment")
  return np.asarray(xent), np.asarray(target_weights(
      jnp.asarray(batch["text_mask"]), None if segment is None else jnp.asarray(segment)))


def test_packed_and_unpacked_examples_give_the_same_loss(setup):
  model, batch = setup
  packed = _pack(PAIRS, batch, 3)
  np.testing.assert_array_equal(np.unique(packed["text_segment"]), [0, 1, 2, 3])
  xent, w = _xent(model, {k: v[:3] for k, v in batch.items()})
  alone = (xent * w).sum(1) / w.sum(1)
  pxent, pw = _xent(model, packed)
  target_segment = packed["text_segment"][0, 1:]
  together = [(pxent[0] * pw[0])[target_segment == s].sum() / pw[0][target_segment == s].sum()
              for s in (1, 2, 3)]
  assert pw.sum() == w.sum()  # the same targets: none across a boundary, none lost
  np.testing.assert_allclose(together, alone, atol=1e-5, rtol=0)


def _segment_outputs(model, batch, segment):
  enc = _encode(model, batch)
  text = np.asarray(enc.tokens["text"])[0][batch["text_segment"][0] == segment]
  n = enc.tokens["image"].shape[1] // batch["image"].shape[1]
  image = np.asarray(enc.tokens["image"])[0].reshape(-1, n, enc.tokens["image"].shape[-1])
  return text, image[batch["image_segment"][0] == segment]


def test_changing_segment_2_does_not_change_segment_1(setup):
  model, batch = setup
  packed = _pack(PAIRS, batch, 3)
  changed = dict(packed)
  changed["image"] = packed["image"].copy()
  changed["image"][0, 1] = np.random.default_rng(0).normal(size=packed["image"][0, 1].shape)
  changed["text"] = np.where(packed["text_segment"] == 2, 7, packed["text"])
  for a, b in zip(_segment_outputs(model, packed, 1), _segment_outputs(model, changed, 1)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(_segment_outputs(model, packed, 2), _segment_outputs(model, changed, 2)):
    assert np.abs(a - b).max() > 1e-3  # the change is seen where it belongs


def test_no_gradient_crosses_a_segment(setup):
  model, batch = setup
  packed = {k: jnp.asarray(v) for k, v in _pack(PAIRS, batch, 3).items()}
  x = model_inputs(packed, ("image", "text")).replace(causal=("text",))
  tokens, infos = model.trunk_inputs(x, {})
  target_segment = packed["text_segment"][:, 1:]

  def segment_loss(toks, s):
    out, _ = model.trunk(toks, infos)
    xent = token_xent(model.decode(out["text"], HEAD), packed["text"],
                      jnp.ones(packed["text"].shape, bool))[0]
    w = target_weights(packed["text_mask"], packed["text_segment"]) * (target_segment == s)
    return jnp.sum(xent * w)

  for s in (1, 2, 3):
    grads = jax.grad(segment_loss)(tokens, s)
    for m in ("image", "text"):
      g = np.abs(np.asarray(grads[m][0])).sum(-1)
      mine = np.asarray(infos[m].segment[0]) == s
      assert np.all(g[~mine] == 0.0), (s, m)  # exactly: no path from other examples
      assert g[mine].max() > 0.0, (s, m)


def test_interleaved_captions_see_their_past_only(setup):
  model, batch = setup
  doc = _pack(DOCS, batch, 2)  # one document: image 1, caption 1, image 2, caption 2
  assert doc["image_segment"][0, :2].tolist() == [1, 1]
  orders = doc["text_order"][0][doc["text_mask"][0]]
  assert np.all(np.diff(orders) >= 1) and doc["image_order"][0, 0] == 0
  cap1_len = int(np.argmax(np.diff(orders) > 1)) + 1  # image 2 sits in the gap
  assert doc["image_order"][0, 1] == cap1_len + 1
  changed = dict(doc)
  changed["image"] = doc["image"].copy()
  changed["image"][0, 1] = doc["image"][0, 0]  # image 2 replaced
  a, b = (np.asarray(_encode(model, d).tokens["text"])[0] for d in (doc, changed))
  np.testing.assert_array_equal(a[:cap1_len], b[:cap1_len])  # caption 1 never sees image 2
  assert np.abs(a[cap1_len:orders.size] - b[cap1_len:orders.size]).max() > 1e-3


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(xs, ys):
  assert len(xs) == len(ys)
  for x, y in zip(xs, ys):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize("variant", ["tiny_early_packed", "tiny_early_interleaved"])
def test_the_packed_stream_resumes_exactly_on_any_process_count(world_dir, variant):
  data = _exp(world_dir, variant).tasks["default"].data
  reference = _take(pipeline.make_train_iterator(data, batch_size=4, seed=3), 5)
  first = pipeline.make_train_iterator(data, batch_size=4, seed=3)
  _take(first, 2)
  state = first.get_state()
  assert set(state) == {"packed", "global_batch"}
  resumed = pipeline.make_train_iterator(data, batch_size=4, seed=3)
  resumed.set_state(state)
  _assert_same(_take(resumed, 3), reference[2:])
  halves = []
  for p in range(2):
    it = pipeline.make_train_iterator(data, batch_size=4, seed=3, process_index=p,
                                      process_count=2)
    it.set_state(state)
    halves.append(_take(it, 3))
  joined = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*halves)]
  _assert_same(joined, reference[2:])


@pytest.mark.parametrize("override, message", [
    ("tasks.default.data.packing.length=40", "packing.length: length=40 is shorter than one "
     "example.*use length >= 48"),
    ("tasks.default.data.packing.images=0", None),  # text-only rows are allowed
])
def test_a_row_shorter_than_one_example_is_refused(world_dir, override, message):
  if message is None:
    _exp(world_dir, "tiny_early_packed", override)
    return
  with pytest.raises(ConfigError, match=message):
    _exp(world_dir, "tiny_early_packed", override)


def test_bad_packing_settings_are_refused(world_dir):
  with pytest.raises(ConfigError, match="images=1 is fewer than the 2 image"):
    _exp(world_dir, "tiny_early_interleaved", "tasks.default.data.packing.images=1")
  with pytest.raises(ConfigError, match="length=96 is shorter than one example.*>= 96|"
                     "length=95 is shorter"):
    _exp(world_dir, "tiny_early_interleaved", "tasks.default.data.packing.length=95")
  late = lambda c: c.model.update(dict(fusion=dict(type="late_decoder",
                                                   decoder_modality="text", encoder_depth=1)))
  with pytest.raises(ConfigError, match="packed rows need config.model.fusion.type='early'"):
    _exp(world_dir, edit=late)
  moe = lambda c: c.model.update(dict(ffn=dict(type="moe", num_experts=4,
                                                routing="token_choice", top_k=1)))
  with pytest.raises(ConfigError, match="routing='token_choice' drops tokens by capacity"):
    _exp(world_dir, edit=moe)
  with pytest.raises(ConfigError, match="kind.*'pairs', 'interleaved'"):
    _exp(world_dir, "tiny_early_packed", "tasks.default.data.packing.kind=documents")


def test_packed_tokens_count_once(setup, world_dir):
  exp = _exp(world_dir)
  packed = _pack(PAIRS, setup[1], 3)
  shapes = {k: v.shape for k, v in packed.items()}
  objectives = exp.tasks["default"].objectives
  image_tokens = (32 // 8) ** 2
  # One row: 3 image slots of 16 tokens and 144 text tokens, each counted once, whatever
  # the 3 examples in it would have counted alone (3 x (16 + 48)).
  assert flops.tokens_per_step(exp.model, objectives, shapes) == 3 * image_tokens + 144
  flat = {"image": (1, 32, 32, 3), "text": (1, 144)}
  grown = flops.train_step_flops(exp.model, objectives, shapes)
  # Against one unpacked example with the same text length: the difference is exactly the
  # two extra images' tokens in the trunk, their patch embedding, and the longer sequence.
  assert grown > flops.train_step_flops(exp.model, objectives, flat)
  tokens = flops.pass_tokens(exp.model, ("image", "text"), shapes)
  assert tokens == {"image": 3 * image_tokens, "text": 144}
