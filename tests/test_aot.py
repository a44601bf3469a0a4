"""Ahead-of-time: compile for a mesh without running, and see what the memory levers do."""
import threading

import jax
import pytest

from mmjax.experiment import build
from mmjax.config import recipe as config_lib
from mmjax import experiment
from mmjax.training import optimizer as optim
from mmjax.training import trainer
from mmjax.training import step as step_lib
from mmjax.data import pipeline
from mmjax.models import logical_axes as axes
from mmjax.config.recipe import ConfigError
from tests.conftest import TINY, needs_eight_devices, wait_for

pytestmark = needs_eight_devices


def compile_only(world_dir, tmp_path, *overrides):
  config = experiment.load(TINY, [f"tasks.default.data.data_dir={world_dir}", *overrides])
  return trainer.train(experiment.parse(config), str(tmp_path), compile_only=True)["default"]


def test_compile_only_reports_per_device_memory_and_shards_state(world_dir, tmp_path):
  one = compile_only(world_dir, tmp_path, "mesh.data=8")
  fsdp = compile_only(world_dir, tmp_path, "mesh.data=1", "mesh.fsdp=8")
  for r in (one, fsdp):
    assert r["params_bytes"] > 0 and r["optimizer_bytes"] > r["params_bytes"]
    assert r["temp_bytes"] > 0 and r["flops"] > 0
  assert fsdp["params_bytes"] < 0.5 * one["params_bytes"]
  assert not (tmp_path / "checkpoints").exists()  # nothing was trained or saved


# Two compiles of a default-size model at batch 256 (~40 s cold): in the slow tier.
@pytest.mark.slow
def test_microbatches_lower_temporary_memory(world_dir, tmp_path):
  # Bigger activations than tiny's, so they dominate the step's temporaries.
  big = ["model.depth=4", "model.width=128", "model.mlp_dim=512", "model.num_heads=4",
         "tasks.default.batch_size=256", "mesh.data=8"]
  whole = compile_only(world_dir, tmp_path, *big)
  split = compile_only(world_dir, tmp_path, *big, "tasks.default.microbatches=4")
  assert split["temp_bytes"] < 0.5 * whole["temp_bytes"]
  # (Remat keeps the math -- tests/test_any_mesh.py -- but XLA:CPU's memory analysis shows
  # no saving from it: its scheduler is not memory-aware. See the README.)


@pytest.mark.parametrize("overrides, message", [
    (["mesh.data=3"], "product 3 != 8 devices"),
    (["mesh.data=-1", "mesh.tensor=4"], "num_heads=2 is not divisible by the tensor-parallel size 4"),
    (["mesh.data=8", "tasks.default.batch_size=12"], "batch_size=12 is not divisible by the "
                                                      "data-parallel size 8"),
])
def test_impossible_meshes_fail_before_compiling(world_dir, tmp_path, overrides, message):
  with pytest.raises(ConfigError, match=message):
    compile_only(world_dir, tmp_path, *overrides)


def test_a_large_replicated_parameter_fails_loudly(world_dir, tmp_path):
  with pytest.raises(ConfigError, match="would be replicated on every device"):
    compile_only(world_dir, tmp_path, "mesh.data=1", "mesh.fsdp=8",
                 "sharding.rules.embed=None", "sharding.max_replicated_params=1000")


MOE = ["model.ffn.type=moe", "model.ffn.num_experts=8", "model.ffn.top_k=2"]


def grain_threads() -> list[str]:
  return [t.name for t in threading.enumerate() if t.name.startswith("grain")]


def test_compile_only_of_an_moe_recipe_splits_experts_and_closes_its_input(
    world_dir, tmp_path, capsys):
  config = experiment.load("configs/mm_world_fusion.py:tiny_early_moe", [
      f"tasks.default.data.data_dir={world_dir}", "mesh.data=2", "mesh.expert=4"])
  task = config.tasks.default
  # Held here, so only close() (not garbage collection) can stop its read-ahead threads.
  iterators = {"default": pipeline.make_train_iterator(
      task.data, batch_size=task.batch_size, seed=0, process_index=0, process_count=1)}
  r = trainer.train(experiment.parse(config), str(tmp_path), compile_only=True, iterators=iterators)["default"]
  assert r["params_bytes"] > 0 and r["temp_bytes"] > 0 and r["flops"] > 0
  assert "per-device memory" in capsys.readouterr().err
  spec = build.model_spec(config, build.task_objectives(config))
  abstract = step_lib.abstract_train_state(spec, config.seed, optim.make_optimizer(config.optim, config.total_steps))[2]
  names = jax.tree.leaves(axes.logical_axes_of(abstract.params),
                         is_leaf=lambda x: isinstance(x, axes.Names))
  sizes = [x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract.params)]
  expert_bytes = sum(b for b, n in zip(sizes, names) if "expert" in n)
  assert expert_bytes > 0
  # Each device holds a quarter of the experts and all the rest (no fsdp).
  assert r["params_bytes"] <= sum(sizes) - 0.75 * expert_bytes + 1024
  # The input pipeline's read-ahead threads stop once it is closed, each after the read it
  # is in. A generous deadline, for a loaded machine: the wait ends as soon as they are gone.
  wait_for(lambda: not grain_threads(), 60, "grain's read-ahead threads to stop after close",
           lambda: f"still running: {grain_threads()}")


def test_an_expert_count_the_expert_axis_does_not_divide_fails_before_compiling(
    world_dir, tmp_path):
  with pytest.raises(ConfigError, match="num_experts=6 is not divisible by the "
                                        "expert-parallel size 4"):
    compile_only(world_dir, tmp_path, *MOE, "model.ffn.num_experts=6", "mesh.data=2",
                 "mesh.expert=4")
