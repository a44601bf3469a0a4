"""Recipes load, overrides apply with the right types, and bad input names the key."""
import pytest

from mmjax.config import recipe as config_lib
from mmjax import experiment
from tests.conftest import TINY


def load(*overrides):
  return experiment.load(TINY, list(overrides))


def test_tiny_recipe_loads_and_overrides_parse_by_type():
  c = load("model.depth=3", "optim.learning_rate=1e-2", "model.modalities.image.shape=(16,16,3)",
           "tasks.default.data.name=cifar10", "progress=True")
  assert c.model.depth == 3 and c.optim.learning_rate == 1e-2
  assert tuple(c.model.modalities.image.shape) == (16, 16, 3)
  assert c.tasks.default.data.name == "cifar10" and c.progress is True


@pytest.mark.parametrize("override, message", [
    ("model.dept=3", "unknown config key 'model.dept'.*did you mean 'depth'"),
    ("nope=1", "unknown config key 'nope'.*valid: .*checkpoint"),
    ("model.depth=abc", "model.depth='abc'.*int"),
    ("model.depth=0", "model.depth=0: must be a positive integer"),
    ("model.fusion.type=middle", "model.fusion.type='middle': unknown fusion type; valid: 'bottleneck', 'deq', 'early', 'late'"),
    ("model.fusion=early", "model.fusion is a section.*--config.model.fusion.type=early"),
    ("model.ffn.activation=tanh", "config.model.ffn.activation='tanh': valid: 'gelu'"),
    ("model.ffn.num_experts=8", "model.ffn.num_experts belongs to feed-forward type 'moe', not 'mlp'"),
    ("schedule.type=roundrobin", "schedule.type='roundrobin': unknown schedule type"),
    ("tasks.default.weight=-1.0", "tasks.default.weight=-1.0: must be a finite number >= 0"),
    ("model.num_heads=3", "model.num_heads=3: model.width=32 is not divisible by num_heads=3"),
    ("model.modalities.image.shape=(30,30,3)", "image H=30 is not divisible by patch 8"),
    ("model.modalities.video.shape=(3,16,16,3)", "3 frames are not divisible by tubelet length 2"),
    ("model.modalities.audio.kind=smell", "audio.kind='smell': valid"),
    ("nan_policy=ignore", "nan_policy='ignore'; valid: 'halt', 'skip'"),
    ("tasks.default.objectives.text_image.kind=cosine",
     "config.tasks.default.objectives.text_image.kind='cosine': valid: 'softmax', 'sigmoid'"),
    ("tasks.default.objectives.text_image.ratio=0.5",
     "text_image.ratio belongs to objective type 'masked', not 'contrastive'"),
    ("evals.retrieval.type=recall", "evals.retrieval.type='recall': unknown evaluator type"),
    ("tasks.default.objectives.text_image.b=smell", "modality 'smell'"),
    ("tasks.default.data.preprocess.image.size=20", "size=20 is not divisible by"),
    ("evals.loss.task=other", "evals.loss.task='other'; valid"),
    ("model", "expected --config.KEY=VALUE"),
    ("sharding.rules.mlp=model", "sharding.rules.mlp='model' names unknown mesh axes \\['model'\\]"),
    ("mesh.dcn_model=2", "unknown config key 'mesh.dcn_model'"),
    ("model=3", "is a section"),
])
def test_bad_overrides_fail_naming_the_key(override, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    load(override)


def test_unknown_variant_and_missing_file():
  with pytest.raises(ValueError, match="unknown variant 'huge'; valid: default, tiny"):
    experiment.load(TINY.replace(":tiny", ":huge"))
  with pytest.raises(config_lib.ConfigError, match="no file"):
    experiment.load("configs/nope.py:tiny")


def json_values(x):
  """`x` as JSON gives it back: tuples become lists."""
  if isinstance(x, dict):
    return {k: json_values(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [json_values(v) for v in x]
  return x


def test_config_json_round_trip():
  # Values other than the recipe's, so a round trip that fell back to defaults would show.
  c = load("model.depth=3", "optim.learning_rate=1e-2", "model.modalities.image.shape=(16,16,3)",
           "checkpoint.every_steps=5")
  back = config_lib.from_json(config_lib.to_json(c))
  assert back.to_dict() == json_values(c.to_dict())  # every key and value of the original
  parsed, parsed_back = experiment.validate(c), experiment.validate(back)
  for section in ("trainer", "optim", "checkpoint", "mesh", "model", "evals"):
    assert getattr(parsed_back, section) == getattr(parsed, section), section
  assert parsed_back.tasks.keys() == parsed.tasks.keys()
  for name, task in parsed.tasks.items():
    assert parsed_back.tasks[name].settings == task.settings
    assert parsed_back.tasks[name].objectives == task.objectives
    assert parsed_back.tasks[name].data.to_dict() == json_values(task.data.to_dict())
  assert back.model.depth == 3 and back.optim.learning_rate == 1e-2
  assert back.checkpoint.every_steps == 5 and list(back.model.modalities.image.shape) == [16, 16, 3]


def test_an_objective_whose_modality_the_data_does_not_make_is_refused():
  c = config_lib.load_recipe(TINY)
  with c.unlocked():
    del c.tasks.default.data.preprocess["audio"]
  with pytest.raises(config_lib.ConfigError,
                     match="objective 'av_label' needs batch key 'audio'.*preprocess only makes"):
    experiment.validate(c)
