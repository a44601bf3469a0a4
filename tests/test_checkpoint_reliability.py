"""Checkpoint reliability, in-process and deterministic (issue 21): every step checksummed,
all-damaged runs stop, live readers tell deleted from damaged. Faults are injected through
mmjax.checkpoint.faults rather than hoped for with timing."""
from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.checkpoint import checksums, faults
from mmjax.checkpoint.checkpointer import Checkpointer


def tiny_state(value: float = 1.0) -> dict:
  return {"params": {"w": jnp.full((4, 4), value, jnp.float32), "b": jnp.zeros(3, jnp.float32)},
          "step": jnp.int32(0)}


def manifests(directory) -> dict[int, list[str]]:
  out = {}
  for name in os.listdir(directory):
    if name.isdigit():
      out[int(name)] = sorted(n for n in os.listdir(os.path.join(directory, name))
                              if n.startswith(checksums.MANIFEST_PREFIX))
  return out


def test_every_async_save_is_checksummed_even_when_saves_overlap(tmp_path):
  ckpt = Checkpointer(str(tmp_path / "checkpoints"), keep=None, async_save=True)
  sealed = []
  with faults.injected("seal_before_commit", lambda step, directory: sealed.append(step)):
    try:
      for step in range(1, 11):  # each save starts while the previous one finalises
        ckpt.save(step, tiny_state(step), {"default": {"i": step}})
    finally:
      ckpt.close()
  assert sealed == list(range(1, 11))  # each callback sealed its own step, in order
  found = manifests(tmp_path / "checkpoints")
  assert sorted(found) == list(range(1, 11))
  assert {s: m for s, m in found.items() if m != [f"{checksums.MANIFEST_PREFIX}0.json"]} == {}
  for step in found:
    assert checksums.problems(str(tmp_path / "checkpoints" / str(step))) == []


def abstract_of(state):
  import jax
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), state)


def flip_bytes(step_dir) -> None:
  """Changes 8 bytes in the middle of the step's largest file (sizes unchanged)."""
  files = [os.path.join(r, n) for r, _, ns in os.walk(step_dir) for n in ns]
  victim = max(files, key=os.path.getsize)
  with open(victim, "r+b") as f:
    f.seek(os.path.getsize(victim) // 2)
    f.write(b"\xa5" * 8)


@pytest.fixture
def two_damaged_steps(tmp_path):
  directory = tmp_path / "checkpoints"
  ckpt = Checkpointer(str(directory), async_save=False)
  for step in (2, 4):
    ckpt.save(step, tiny_state(step), {"default": {"i": step}})
  ckpt.close()
  for step in (2, 4):
    flip_bytes(directory / str(step))
  return directory


def test_all_steps_damaged_stops_naming_each_step_and_moves_nothing(two_damaged_steps):
  from mmjax.checkpoint.errors import CheckpointDamagedError
  ckpt = Checkpointer(str(two_damaged_steps), async_save=False)
  try:
    with pytest.raises(CheckpointDamagedError) as e:
      ckpt.restore_latest_good(abstract_of(tiny_state()))
  finally:
    ckpt.close()
  text = str(e.value)
  assert "every checkpoint under" in text and "(steps 4, 2)" in text
  assert f"checkpoint step 4 in {two_damaged_steps} is damaged" in text
  assert f"checkpoint step 2 in {two_damaged_steps} is damaged" in text
  assert "--restart_from_scratch" in text and "checkpoints_damaged" in text
  assert sorted(os.listdir(two_damaged_steps)) == ["2", "4"]  # nothing moved
  assert not os.path.exists(two_damaged_steps.parent / "checkpoints_damaged")


def test_restart_from_scratch_moves_every_damaged_step_aside(two_damaged_steps):
  ckpt = Checkpointer(str(two_damaged_steps), async_save=False, restart_from_scratch=True)
  try:
    assert ckpt.restore_latest_good(abstract_of(tiny_state())) == (None, None, {})
  finally:
    ckpt.close()
  assert os.listdir(two_damaged_steps) == []
  moved = sorted(n.split("-")[0] for n in os.listdir(two_damaged_steps.parent /
                                                      "checkpoints_damaged"))
  assert moved == ["2", "4"]


@pytest.fixture
def three_steps(tmp_path):
  directory = tmp_path / "checkpoints"
  ckpt = Checkpointer(str(directory), async_save=False)
  for step in (1, 2, 3):
    ckpt.save(step, tiny_state(step), {"default": {"i": step}})
  ckpt.close()
  return directory


def delete_files_only(step_dir) -> None:
  """What Orbax's deletion of a step leaves for a while: folders without (all) their files."""
  for root, _, names in os.walk(step_dir):
    for n in names:
      os.unlink(os.path.join(root, n))


def test_a_step_deleted_under_a_reader_is_not_damage_and_the_newest_is_read(three_steps,
                                                                              caplog):
  import shutil
  hidden = three_steps.parent / "3-not-yet-committed"
  os.rename(three_steps / "3", hidden)
  reader = Checkpointer(str(three_steps), read_only=True)

  def trainer_commits_3_and_deletes_2(step, directory):
    if step == 2:  # the reader chose 2; meanwhile 3 is committed and 2 is being deleted
      os.rename(hidden, three_steps / "3")
      delete_files_only(three_steps / "2")

  finish_deletion = lambda step, directory: shutil.rmtree(three_steps / str(step))
  try:
    with faults.injected("before_restore", trainer_commits_3_and_deletes_2), \
         faults.injected("reader_waits_for_deletion", finish_deletion):
      step, state, data = reader.restore_for_reading(None, abstract_of(tiny_state()))
  finally:
    reader.close()
  assert step == 3 and data == {"default": {"i": 3}}
  np.testing.assert_array_equal(state["params"]["w"], np.full((4, 4), 3.0))
  assert "damaged" not in caplog.text and "deleted by the trainer" in caplog.text
  assert not os.path.exists(three_steps.parent / "checkpoints_damaged")


def test_a_damaged_step_next_to_newer_ones_is_still_reported_damaged(three_steps,
                                                                     monkeypatch):
  from mmjax.checkpoint import live_reads
  from mmjax.checkpoint.errors import CheckpointDamagedError
  monkeypatch.setattr(live_reads, "DELETION_STALL_S", 0.2)
  flip_bytes(three_steps / "2")
  reader = Checkpointer(str(three_steps), read_only=True)
  try:
    with pytest.raises(CheckpointDamagedError, match="step 2 .* is damaged.*checksum"):
      reader.restore_for_reading(2, abstract_of(tiny_state()))
  finally:
    reader.close()
  assert sorted(os.listdir(three_steps)) == ["1", "2", "3"]  # a reader moves nothing


def test_a_reader_lists_again_when_a_deletion_races_the_managers_start(three_steps):
  def deletion_races_the_listing(attempt, directory):
    if attempt == 0:
      raise FileNotFoundError(f"{directory}/1")  # as Orbax's _load_checkpoint_infos does
  with faults.injected("open_manager", deletion_races_the_listing):
    reader = Checkpointer(str(three_steps), read_only=True)
  try:
    assert reader.all_steps() == [1, 2, 3]
  finally:
    reader.close()


def test_the_last_finished_step_is_read_from_disk_not_from_a_save_in_flight(tmp_path):
  ckpt = Checkpointer(str(tmp_path / "checkpoints"), async_save=True)
  seen = {}
  record = lambda step, directory: seen.setdefault(step, ckpt.latest_step())
  try:
    with faults.injected("seal_before_commit", record):  # before each step's commit
      ckpt.save(2, tiny_state(), {})
      ckpt.save(4, tiny_state(), {})
      ckpt.wait()
  finally:
    ckpt.close()
  assert seen == {2: None, 4: 2}  # only a temporary folder of the step being saved
  assert ckpt.latest_step() == 4


def test_disk_full_advice_for_orbax_s_wrapped_errors():
  from mmjax.checkpoint import write_errors
  orbax = ValueError("RESOURCE_EXHAUSTED: Error writing local file "
                     "\"/w/checkpoints/2.orbax-checkpoint-tmp/state/d/x\": [OS error 28: "
                     "No space left on device]")
  text = write_errors.stopped("saving a checkpoint under /w/checkpoints", orbax, None)
  assert "The disk is full" in text and "no checkpoint has been finished yet" in text
  assert "last finished checkpoint on disk is step 6" in write_errors.stopped("x", orbax, 6)
  assert write_errors.advice(RuntimeError("boom")) == "Fix the cause"
