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
