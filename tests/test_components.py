"""Component sections: registries, defaults in one place, messages, and older layouts."""
import json

import pytest

from mmjax.experiment import build
from mmjax.config import recipe as config_lib
from mmjax import experiment
from mmjax.errors import ConfigError
from mmjax.models.ffn.mlp import MlpConfig
from tests.conftest import TINY


def test_a_field_the_recipe_left_at_its_default_can_be_set_from_the_command_line():
  c = experiment.load(TINY, ["model.ffn.activation=relu"])  # recipe's ffn has only `type`
  assert build.model_spec(c).ffn == MlpConfig(activation="relu")
  assert build.model_spec(experiment.load(TINY)).ffn == MlpConfig()  # the dataclass default


def test_objective_heads_do_not_depend_on_objective_names():
  renamed = config_lib.load_recipe(TINY)
  with renamed.unlocked():
    objs = renamed.tasks.default.objectives
    for old, new in (("av_label", "va_label"), ("text_image", "ti")):
      objs[new] = objs[old]
      del objs[old]
    renamed.evals.classification.objective = "va_label"
  experiment.validate(renamed)
  assert build.model_spec(renamed).heads == build.model_spec(experiment.load(TINY)).heads
  heads = build.model_spec(renamed).heads
  assert heads.class_heads == {"label": 20} and heads.contrastive_scales == ("text_image",)


def _old_layout_json() -> str:
  """config.json as the version before component sections wrote it."""
  d = json.loads(config_lib.to_json(experiment.load(TINY)))
  d["model"]["fusion"] = "early"
  del d["model"]["ffn"], d["schedule"]
  for o in d["tasks"]["default"]["objectives"].values():
    o.pop("head", None)
  return json.dumps(d)


def test_an_old_layout_is_upgraded_keeping_its_head_names_and_task_draws(caplog):
  old = config_lib.from_json(_old_layout_json())
  experiment.validate(old)
  assert old.model.fusion.type == "early" and old.schedule.type == "sampled"
  heads = build.model_spec(old).heads
  # Checkpoints of that version named heads after objectives: they still restore.
  assert heads.class_heads == {"av_label": 20} and heads.contrastive_scales == ("text_image",)
  assert "model.fusion='early' -> model.fusion.type='early'" in caplog.text


@pytest.mark.parametrize("override, message", [
    ("model.fusion_layer=2", "unknown config key 'model.fusion_layer'"),
    ("model.ffn.type=experts", "model.ffn.type='experts': unknown feed-forward type.*valid: 'mlp', 'moe'"),
    ("tasks.default.objectives.av_label.num_classes=1", "av_label.num_classes=1: need >= 2"),
    ("tasks.default.objectives.text_image.a=smell", "uses modality 'smell'"),
    ("evals.classification.objective=text_image",
     "evals.classification.objective='text_image' must name one classification objective"),
    ("evals.retrieval.every_steps=0", "evals.retrieval.every_steps=0: must be a positive"),
    ("evals.retrieval.shuffle=1", "evals.retrieval.shuffle=1: expected a bool"),
    ("tasks.default.weight=0.0", "every task weight is 0"),
])
def test_component_errors_name_the_full_key(override, message):
  with pytest.raises(ConfigError, match=message):
    experiment.load(TINY, [override])
