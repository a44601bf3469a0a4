"""The predict functions made in one place (mmjax/training/predict.py): their names per task,
and what the classifying objectives' ones return, row by row."""
import jax.numpy as jnp
import numpy as np

from mmjax import experiment
from mmjax.models.aux_outputs import Aux
from mmjax.objectives.classification import Classification
from mmjax.objectives.matching import Matching
from mmjax.training import predict
from tests.conftest import TINY


def test_each_task_has_embeddings_its_classifiers_and_its_loss():
  exp = experiment.parse(experiment.load(TINY))
  names = predict.predict_names(exp.objectives, exp.model.modalities)
  assert set(names) == set(exp.tasks)
  assert set(names["default"]) == (
      {f"embed/{m}" for m in exp.model.modalities} | {"classify/av_label", "loss"})


class FirstTextToken:
  """A stand-in model whose logits are each row's first text token (a row's identity)."""

  def class_logits(self, x, head, per_modality=False):
    del head, per_modality
    return x.inputs["text"][:, :1].astype(jnp.float32), Aux()


def _batch(content):
  b = len(content)
  return {"text": jnp.arange(b)[:, None] * 10 + jnp.zeros((b, 3), jnp.int32),
          "image": jnp.zeros((b, 2, 2, 3)), "content_id": jnp.asarray(content, jnp.int32)}


def test_matching_predicts_each_examples_positive_and_negative_pair_in_its_row():
  classify = Matching("match", max_shift=2).predict_fns()["classify/match"]
  # Row 0's next row shows the same content, so its negative partner is row 2; row 3 has
  # no row with other content within 2 steps (rows 0, 1 hold the same content as it).
  out = classify(FirstTextToken(), _batch([0, 0, 1, 0]))
  assert out["logits"].shape == (4, 2, 1)
  np.testing.assert_array_equal(out["logits"][:, 0, 0], [0, 10, 20, 30])  # own caption
  np.testing.assert_array_equal(out["logits"][:, 1, 0], [20, 20, 30, 0])  # partner's caption
  np.testing.assert_array_equal(out["label"], [[1, 0]] * 4)
  np.testing.assert_array_equal(out["usable"], [[True, True]] * 3 + [[True, False]])


def test_classification_predicts_its_heads_logits_against_its_label():
  classify = Classification("cls", inputs=("text",), label="y", num_classes=2).predict_fns()
  batch = dict(_batch([0, 1, 2]), y=jnp.array([1, 0, 1]))
  out = classify["classify/cls"](FirstTextToken(), batch)
  np.testing.assert_array_equal(out["logits"][:, 0], [0, 10, 20])
  np.testing.assert_array_equal(out["label"], [1, 0, 1])
  assert out["usable"].all()


def test_the_classification_evaluator_scores_a_matching_head_as_its_objective_does():
  from mmjax import objectives
  from mmjax.evaluators.classification import correct_and_usable
  from tests.test_fusion import KINDS, model_with
  from tests.test_objectives import batch
  b = dict(batch(8), content_id=jnp.array([0, 1, 1, 2, 3, 3, 4, 5]))
  o = objectives.make_objective("match", dict(type="matching", inputs=("video", "audio")), KINDS)
  model = model_with(dict(type="early"), depth=1, pool="mean", heads=objectives.heads_for((o,)))
  # A classifier away from its zero init, so that the answers differ between pairs.
  head = model.classifiers["match_text_video_audio"]
  head.kernel[...] = jnp.cos(jnp.arange(head.kernel.size)).reshape(head.kernel.shape)
  _, metrics, _ = o(model, b, None)
  correct, usable = correct_and_usable(o.predict_fns()["classify/match"](model, b))
  accuracy = float(jnp.sum(correct & usable) / jnp.sum(usable))
  assert accuracy == float(metrics["accuracy"])
  assert 0.5 < accuracy < 1  # the pairs are scored apart, not all one way (9/16 here)
