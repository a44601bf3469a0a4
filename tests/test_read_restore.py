"""The read-only restore next to a live trainer: a step that keep-N deletes while a reader
reads it is retried with the newest step (mmjax/checkpoint/verified_restore.py)."""
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from mmjax.checkpoint.checkpointer import Checkpointer, CheckpointError


@struct.dataclass
class State:
  params: dict
  step: jax.Array


def _state(value: float) -> State:
  return State(params={"w": jnp.full((4, 3), value, jnp.float32)}, step=jnp.array(int(value)))


def _abstract() -> State:
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      _state(0.0))


def _save(directory, *steps):
  writer = Checkpointer(str(directory), async_save=False)
  for s in steps:
    writer.save(s, _state(float(s)), {"t": {"pos": s}})
  writer.close()


@pytest.fixture
def live_workdir(tmp_path):
  """checkpoints/ with steps 1 and 2, and step 3 written aside: `trainer_moves_on()` does
  what a keep-2 trainer does next (commits 3, deletes 2)."""
  ckpts, aside = tmp_path / "checkpoints", tmp_path / "aside"
  _save(ckpts, 1, 2)
  _save(aside, 3)

  def trainer_moves_on():
    os.rename(aside / "3", ckpts / "3")  # an Orbax commit is a rename too
    shutil.rmtree(ckpts / "2")
  return ckpts, trainer_moves_on


def _delete_during_first_read(reader, trainer_moves_on):
  read, calls = reader.restore_params, []

  def read_while_trainer_moves_on(step, abstract_params):
    calls.append(step)
    if len(calls) == 1:
      trainer_moves_on()
    return read(step, abstract_params)
  reader.restore_params = read_while_trainer_moves_on
  return calls


def test_a_reader_whose_step_is_deleted_under_it_retries_with_the_newest(live_workdir, caplog):
  ckpts, trainer_moves_on = live_workdir
  reader = Checkpointer(str(ckpts), read_only=True)
  calls = _delete_during_first_read(reader, trainer_moves_on)
  with caplog.at_level(logging.WARNING):
    step, params, _ = reader.restore_for_reading(None, _abstract(), params_only=True)
  reader.close()
  assert calls == [2, 3]  # the newest when it started, then the newest after the deletion
  assert step == 3
  np.testing.assert_array_equal(np.asarray(params["w"]), np.full((4, 3), 3.0, np.float32))
  assert "step 2 was deleted by the trainer while being read" in caplog.text
  assert sorted(os.listdir(ckpts)) == ["1", "3"]  # the reader removed or moved nothing


def test_a_reader_of_a_named_step_that_is_deleted_is_told_to_pick_a_newer_one(live_workdir):
  ckpts, trainer_moves_on = live_workdir
  reader = Checkpointer(str(ckpts), read_only=True)
  _delete_during_first_read(reader, trainer_moves_on)
  with pytest.raises(CheckpointError, match=r"step 2 .* was deleted while being read.*--step 3"):
    reader.restore_for_reading(2, _abstract(), params_only=True)
  reader.close()
