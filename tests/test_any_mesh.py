"""Same math on any mesh: the tiny recipe's loss curve on 8 fake CPU devices matches one
device for data, fsdp and tensor parallelism and their mixes; memory levers keep the math."""
import jax
import numpy as np
import pytest

from mmjax.experiment import build
from mmjax.config import recipe as config_lib
from mmjax import experiment
from mmjax.training import optimizer as optim
from mmjax.runtime import sharding
from mmjax.training import step as train_step
from mmjax.data import pipeline
from mmjax.models import logical_axes as axes
from mmjax.training.step import abstract_train_state, with_shardings
from tests.conftest import TINY, needs_eight_devices

pytestmark = needs_eight_devices
STEPS = 20


def loss_curve(world_dir, mesh_sizes, *overrides, steps=STEPS, devices=None):
  config = experiment.load(TINY, [f"tasks.default.data.data_dir={world_dir}", *overrides])
  mesh = sharding.make_mesh(mesh_sizes, devices)
  spec = build.model_spec(config)
  objectives = build.task_objectives(config)["default"]
  optimizer = optim.make_optimizer(config.optim, config.total_steps)
  graphdef, init_fn, abstract = abstract_train_state(spec, config.seed, optimizer)
  rules = sharding.rules_from_config(config.sharding.rules)
  state_sh = sharding.state_shardings(abstract, mesh, rules)
  state = jax.jit(init_fn, out_shardings=state_sh)()
  task = config.tasks.default
  step = train_step.make_train_step(graphdef, objectives, optimizer, config.seed,
                                    task.microbatches)
  it = pipeline.make_train_iterator(task.data, batch_size=task.batch_size, seed=config.seed)
  with axes.activation_sharding(sharding.activation_sharder(mesh, rules)):
    jitted = jax.jit(step, donate_argnums=0, out_shardings=(state_sh, sharding.replicated(mesh)))
    losses = []
    for _ in range(steps):
      state, metrics = jitted(state, sharding.global_batch(next(it), mesh))
      losses.append(float(metrics["loss"]))
  return np.asarray(losses), state, with_shardings(abstract, state_sh)


@pytest.fixture(scope="module")
def reference(world_dir):
  return loss_curve(world_dir, {"data": 1}, devices=jax.devices()[:1])[0]


@pytest.mark.parametrize("mesh", [
    {"data": 8}, {"data": 2, "fsdp": 4}, {"fsdp": 2, "tensor": 4},
    {"data": 2, "fsdp": 2, "tensor": 2}])
def test_loss_curve_matches_one_device(world_dir, reference, mesh):
  losses, state, _ = loss_curve(world_dir, mesh)
  assert reference[-1] < reference[0]  # it trains
  np.testing.assert_allclose(losses, reference, rtol=2e-4, atol=2e-4)
  wi = state.params["trunk"]["blocks"][0]["mlp"]["wi"][...]
  assert len(wi.sharding.device_set) == 8


def test_gradient_accumulation_matches_the_full_batch(world_dir):
  # A per-example loss (classification) is exactly the mean over microbatches; the
  # contrastive objective would see fewer negatives, so it is switched off here.
  only_cls = ["tasks.default.objectives.text_image.weight=0.0"]
  full = loss_curve(world_dir, {"data": 2, "fsdp": 4}, *only_cls, steps=5)[0]
  accumulated = loss_curve(world_dir, {"data": 2, "fsdp": 4}, *only_cls,
                           "tasks.default.microbatches=4", steps=5)[0]
  np.testing.assert_allclose(accumulated, full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("remat", ["full", "save_matmuls"])
def test_remat_policies_keep_the_math(world_dir, reference, remat):
  losses = loss_curve(world_dir, {"data": 1}, f"model.remat={remat}", steps=5,
                      devices=jax.devices()[:1])[0]
  np.testing.assert_allclose(losses, reference[:5], rtol=1e-5, atol=1e-5)


MOE = ["model.ffn.type=moe", "model.ffn.num_experts=4", "model.ffn.top_k=2"]


@pytest.fixture(scope="module")
def moe_references(world_dir):
  return {}


@pytest.mark.slow  # four 20-step runs with experts on 8 devices: minutes on 2 cores
@pytest.mark.parametrize("routing", ["token_choice", "dropless"])
@pytest.mark.parametrize("mesh", [{"data": 2, "expert": 4}, {"fsdp": 2, "expert": 2, "tensor": 2}])
def test_moe_loss_curve_matches_one_device(world_dir, moe_references, routing, mesh):
  # Routing groups are examples, not devices: the math is the same on any mesh, with the
  # batch split over `expert` too and the experts' weights split over it.
  overrides = (*MOE, f"model.ffn.routing={routing}", "model.ffn.capacity_factor=1.0")
  if routing not in moe_references:
    moe_references[routing] = loss_curve(world_dir, {"data": 1}, *overrides, steps=5,
                                         devices=jax.devices()[:1])[0]
  losses, state, _ = loss_curve(world_dir, mesh, *overrides, steps=5)
  np.testing.assert_allclose(losses, moe_references[routing], rtol=2e-4, atol=2e-4)
  wi = state.params["trunk"]["blocks"][0]["mlp"]["wi"][...]
  assert wi.sharding.spec[0] == "expert"  # each expert shard holds its own experts
