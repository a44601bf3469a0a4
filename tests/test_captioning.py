"""The captioning evaluator and generate's refusals: caption fields read back from every
template, metrics on hand-made predictions, a real model's `generate/` predict function
given the whole reference as its prompt (exact match 1), and the bad inputs refused."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmjax import experiment
from mmjax.config import recipe
from mmjax.data import text_tokenizer, world_render
from mmjax.errors import ConfigError
from mmjax.evaluators import captioning
from mmjax.evaluators.caption_fields import caption_fields
from mmjax.generate import find_objective, prompt_ids, sampling_from_flags
from mmjax.models.embedders import ModalitySpec
from mmjax.models.model import build_model
from mmjax.models.spec import ModelSpec
from mmjax.objectives.next_token import NextToken
from mmjax import objectives as objectives_lib
from tests.conftest import ROOT, TINY
from tests.test_evaluators import _batch, _context

TOK = text_tokenizer.ByteTokenizer()


def test_caption_fields_read_every_template_back():
  rng = np.random.default_rng(0)
  for _ in range(300):
    scene = world_render.sample_scene(rng)
    got = caption_fields(world_render.caption(scene))
    assert got == {"shape": world_render.SHAPES[scene.shape],
                   "colour": world_render.COLOUR_NAMES[scene.colour],
                   "size": world_render.SIZES[scene.size],
                   "position": world_render.POSITIONS[scene.position]}


def test_caption_fields_of_garbled_text():
  assert caption_fields("a small large red circle, top") == {
      "shape": "circle", "colour": "red", "size": None, "position": "top"}
  assert caption_fields("xx")["shape"] is None
  assert caption_fields("blue square at the bottom left")["position"] == "bottom left"


def _ids(texts, n=48):
  return TOK.encode_batch(texts, n)


def _hand_made(refs, made, valid):
  """A batch whose predict functions return these captions and known per-token sums."""
  ref_ids, ref_mask = _ids(refs)
  made_ids, _ = _ids(made)
  lengths = np.array([len(t.encode()) + 2 for t in made], np.int32)
  b = len(refs)
  return _batch(valid, ids=made_ids, length=lengths, reference=ref_ids,
                reference_valid=ref_mask, xent_sum=np.arange(1, b + 1, dtype=np.float32),
                targets=np.full(b, 2.0, np.float32), correct=np.ones(b, np.float32))


def _fns():
  keys = ("ids", "length", "reference", "reference_valid")
  return {"generate/cap": lambda model, batch, rng, sampling, eos, k: {x: batch[x] for x in keys},
          "next_token/cap": lambda model, batch: {
              x: batch[x] for x in ("xent_sum", "targets", "correct")}}


def test_captioning_metrics_on_hand_made_captions():
  refs = ["a small red circle at the top", "the left holds a large blue cross",
          "small green square, center", "padding row"]
  made = ["a small red circle at the top",        # exact
          "the left holds a small blue cross",    # size wrong
          "large green circle, center",           # size and shape wrong
          "padding row"]
  ctx, params = _context([_hand_made(refs, made, [True, True, True, False])], _fns())
  cfg = captioning.CaptioningConfig(task="t", objective="cap")
  m = dict(cfg.build("c", ctx).run(params))
  loss = (1 + 2 + 3) / 6
  assert m["t/c/loss"] == pytest.approx(loss)
  assert m["t/c/perplexity"] == pytest.approx(np.exp(loss))
  assert m["t/c/token_acc"] == pytest.approx(3 / 6)
  assert m["t/c/exact_match"] == pytest.approx(1 / 3)
  assert m["t/c/field_acc/shape"] == pytest.approx(2 / 3)
  assert m["t/c/field_acc/size"] == pytest.approx(1 / 3)
  assert m["t/c/field_acc/colour"] == m["t/c/field_acc/position"] == pytest.approx(1.0)
  assert m["t/c/num_examples"] == 3.0
  shuffled = dict(captioning.CaptioningConfig(task="t", shuffle=True).build("c", ctx).run(params))
  # made[i] against refs[i+1]: none equal; sizes (small, small, large) made against
  # (large, small, small): 1 of 3.
  assert shuffled["t/c/exact_match"] == 0.0
  assert shuffled["t/c/field_acc/size"] == pytest.approx(1 / 3)
  assert shuffled["t/c/loss"] == m["t/c/loss"]
  limited = dict(captioning.CaptioningConfig(task="t", max_examples=2).build("c", ctx).run(params))
  assert limited["t/c/num_examples"] == 2.0 and limited["t/c/exact_match"] == 0.5


def test_the_generate_predict_function_given_the_whole_reference_reproduces_it():
  """A real model and NextToken's predict function: with the whole caption (through its EOS)
  as the prompt, the generation is the reference, whatever the model has learned."""
  spec = ModelSpec(modalities={"image": ModalitySpec("image", (8, 8, 3), (4,)),
                               "text": ModalitySpec("text", (48,), (), TOK.vocab_size)},
                   width=16, depth=1, num_heads=2, mlp_dim=32, dtype="float32")
  obj = NextToken(name="cap", context=("image",))
  spec = ModelSpec(**{**spec.__dict__, "heads": objectives_lib.heads_for((obj,))})
  graphdef, params = nnx.split(build_model(spec, 0))
  refs = ["a small red circle at the top", "cross (large), left", "x", "y"]
  ids, mask = _ids(refs)
  batch = _batch([True, True, True, False], image=np.zeros((4, 8, 8, 3), np.float32),
                 text=ids, text_mask=mask)
  ctx, _ = _context([batch], obj.predict_fns())
  ctx = type(ctx)(**{**ctx.__dict__, "graphdef": graphdef})
  full = dict(captioning.CaptioningConfig(task="t", prompt_tokens=48).build("c", ctx).run(params))
  assert full["t/c/exact_match"] == 1.0 and full["t/c/num_examples"] == 3.0
  assert full["t/c/field_acc/shape"] == 1.0
  from_bos = dict(captioning.CaptioningConfig(task="t").build("c", ctx).run(params))
  assert from_bos["t/c/loss"] == pytest.approx(full["t/c/loss"])  # scoring ignores prompts
  assert from_bos["t/c/perplexity"] > 1.0


def test_bad_captioning_settings_are_refused():
  from mmjax.evaluators import EVALUATORS
  with pytest.raises(ConfigError, match="evals.c.prompt_tokens"):
    EVALUATORS.parse({"type": "captioning", "prompt_tokens": 0}, "evals.c")
  with pytest.raises(ConfigError, match="next_token objective"):
    captioning.CaptioningConfig(task="t").check(("loss", "classify/x"), "evals.c")


def test_generate_refuses_a_model_without_a_next_token_head():
  exp = experiment.parse(recipe.load(TINY))
  with pytest.raises(ConfigError, match="no next-token head"):
    find_objective(exp, "", "")
  nmm = experiment.parse(recipe.load(f"{ROOT}/configs/mm_world_nmm.py:tiny_early"))
  task, obj = find_objective(nmm, "", "")
  assert (task, obj.name) == ("default", "caption")


def test_generate_refuses_a_prompt_longer_than_the_text_length():
  np.testing.assert_array_equal(prompt_ids(TOK, "ab", 48), [1, ord("a") + 3, ord("b") + 3])
  assert len(prompt_ids(TOK, "x" * 46, 48)) == 47
  with pytest.raises(ConfigError, match="text length 48"):
    prompt_ids(TOK, "x" * 47, 48)
  with pytest.raises(ConfigError, match="--temperature"):
    sampling_from_flags(-1.0, 0)
