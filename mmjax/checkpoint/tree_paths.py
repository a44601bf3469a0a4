"""Names of pytree paths, as checkpoints and their error messages spell them."""
from __future__ import annotations


def path_name(path) -> str:
  """'params/trunk/blocks/0/mlp/wi' for a pytree path, however the tree spells its keys."""
  parts = []
  for k in path:
    part = getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))
    if part != "value":  # nnx Variables nest their array under .value
      parts.append(str(part))
  return "/".join(parts)
