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
