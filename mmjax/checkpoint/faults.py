"""Named points inside the checkpoint code where tests inject faults (a step deleted under a
reader, a slow finalisation, ...), so races are reproduced deterministically, not by timing.

`with faults.injected("before_restore", fn): ...` makes `hit("before_restore", **info)`
call `fn(**info)`. Nothing is registered outside tests; `hit` is then a dict lookup.
"""
from __future__ import annotations

import contextlib
from typing import Callable

_HOOKS: dict[str, Callable[..., None]] = {}


def hit(point: str, **info) -> None:
  fn = _HOOKS.get(point)
  if fn is not None:
    fn(**info)


@contextlib.contextmanager
def injected(point: str, fn: Callable[..., None]):
  previous = _HOOKS.get(point)
  _HOOKS[point] = fn
  try:
    yield
  finally:
    if previous is None:
      _HOOKS.pop(point, None)
    else:
      _HOOKS[point] = previous
