"""Value checks that apply to every key of a config, whatever the recipe holds."""
from __future__ import annotations

import math

from mmjax.errors import MmjaxError


def nonfinite_floats(tree, prefix: str = "config") -> list[str]:
  """'config.a.b=inf' for every float value that is NaN or infinite (1e999 parses as inf)."""
  out = []
  for k, v in tree.items():
    key = f"{prefix}.{k}"
    if hasattr(v, "items"):
      out.extend(nonfinite_floats(v, key))
    elif isinstance(v, float) and not math.isfinite(v):
      out.append(f"{key}={v}")
    elif isinstance(v, (list, tuple)):
      out.extend(f"{key}[{i}]={x}" for i, x in enumerate(v)
                 if isinstance(x, float) and not math.isfinite(x))
  return out


def check_finite_floats(config, error_cls=MmjaxError) -> None:
  bad = nonfinite_floats(config)
  if bad:
    raise error_cls(f"{', '.join(bad)}: must be a finite number (a value such as 1e999 is "
                    f"read as infinity)")
