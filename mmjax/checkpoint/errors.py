"""The checkpoint errors, shared by the checkpointer and the verified restore."""
from __future__ import annotations

from mmjax.errors import MmjaxError


class CheckpointError(MmjaxError, RuntimeError):
  """A checkpoint cannot be used as asked; the message says why and what to do."""


class CheckpointDamagedError(CheckpointError):
  """A step's files do not verify or do not restore; the message names the step and why."""
