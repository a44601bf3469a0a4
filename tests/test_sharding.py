"""Meshes, the logical->mesh rules table, and state created already sharded (8 fake devices)."""
import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from mmjax.runtime import sharding
from mmjax.models import logical_axes as axes
from tests.conftest import needs_eight_devices
from tests.test_models import small_model


def test_mesh_shape_resolves_the_rest_and_names_bad_numbers():
  ici, dcn = sharding.mesh_shape({"data": -1}, 8)
  assert ici == {"data": 8, "fsdp": 1, "tensor": 1, "expert": 1} and set(dcn.values()) == {1}
  assert sharding.mesh_shape({"data": 2, "fsdp": -1, "tensor": 2}, 8)[0]["fsdp"] == 2
  ici, dcn = sharding.mesh_shape({"fsdp": -1, "dcn_data": -1}, 8, num_slices=2)
  assert ici["fsdp"] == 4 and dcn["data"] == 2
  with pytest.raises(ValueError, match="product 6 != 8 devices"):
    sharding.mesh_shape({"data": 3, "fsdp": 2}, 8)
  with pytest.raises(ValueError, match="only one axis may be -1"):
    sharding.mesh_shape({"data": -1, "fsdp": -1}, 8)
  with pytest.raises(ValueError, match="unknown axes \\['model'\\]; valid"):
    sharding.mesh_shape({"model": 2}, 8)
  with pytest.raises(ValueError, match="not divisible by the fixed axes' product 3"):
    sharding.mesh_shape({"data": -1, "fsdp": 3}, 8)


def test_rules_use_each_mesh_axis_once():
  # Activations' batch is split over the expert axis too (expert parallelism).
  assert sharding.spec_for(("batch", "length", "embed")) == P(("data", "fsdp", "expert"), None, None)
  assert sharding.spec_for(("embed", "mlp")) == P("fsdp", "tensor")
  assert sharding.spec_for((None, "embed", "heads", "kv")) == P(None, "fsdp", "tensor", None)
  with pytest.raises(ValueError, match="logical axis 'nope' has no sharding rule"):
    sharding.spec_for(("nope",))


@needs_eight_devices
def test_state_is_created_sharded_over_fsdp_and_tensor():
  mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
  model = small_model()
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: small_model()), nnx.Param)
  shardings = sharding.state_shardings(abstract, mesh)
  params = jax.jit(lambda: nnx.split(small_model(), nnx.Param)[1], out_shardings=shardings)()
  wi = params["trunk"]["blocks"][0]["mlp"]["wi"][...]
  assert wi.sharding.spec == P("fsdp", "tensor")
  # Each device holds 1/8 of the MLP kernel: it never existed whole on one device.
  assert {s.data.shape for s in wi.addressable_shards} == {(wi.shape[0] // 4, wi.shape[1] // 2)}
  # Same values as an unsharded init (sharding does not change the math).
  ref = nnx.split(model, nnx.Param)[1]
  np.testing.assert_array_equal(np.asarray(wi), np.asarray(ref["trunk"]["blocks"][0]["mlp"]["wi"][...]))


@needs_eight_devices
def test_global_batch_splits_rows_over_data_parallel_axes():
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  x = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
  g = sharding.global_batch({"x": x}, mesh)["x"]
  assert g.shape == (8, 3)
  assert {s.data.shape for s in g.addressable_shards} == {(2, 3)}
  np.testing.assert_array_equal(np.asarray(g), x)


def test_activation_constraints_are_identity_without_rules():
  x = np.ones((2, 3, 4), np.float32)
  assert axes.constrain(x, ("batch", "length", "embed")) is x
