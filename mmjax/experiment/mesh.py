"""The mesh an experiment runs on, refused early when the model or a batch does not split
over it."""
from __future__ import annotations

from mmjax.errors import ConfigError
from mmjax.runtime import sharding


def checked_mesh(exp):
  """The experiment's mesh; a model or batch size that does not split over it is refused
  naming the key and the size it must divide."""
  try:
    mesh = sharding.make_mesh(exp.mesh.axes)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  tensor = mesh.shape["tensor"]
  for key, n in (("num_heads", exp.model.num_heads), ("mlp_dim", exp.model.mlp_dim)):
    if n % tensor:
      raise ConfigError(f"config.model.{key}={n} is not divisible by the tensor-parallel size "
                        f"{tensor} (mesh {dict(mesh.shape)}); pick a multiple of {tensor}")
  data_parallel = sharding.data_parallel_size(mesh)
  for name, task in exp.tasks.items():
    if task.batch_size % data_parallel:
      raise ConfigError(f"config.tasks.{name}.batch_size={task.batch_size} is not divisible by "
                       f"the data-parallel size {data_parallel} (mesh {dict(mesh.shape)})")
  return mesh
