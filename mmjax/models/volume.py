"""The volume spanned by n unit embeddings (GRAM, Cicchetti et al. 2025), shared by the
`gram` objective (mmjax/objectives/gram.py) and retrieval ranked by volume
(mmjax/evaluators/retrieval.py): both may import models, not each other.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# Below this Gram determinant the volume is taken as 0, with a zero gradient: the
# derivative of sqrt is infinite at 0, where an exactly dependent set lands, and rounding
# can make the determinant slightly negative. sqrt(1e-12) = 1e-6 is the largest error this
# adds to a volume. (Rounding itself limits float32: the determinant of coincident unit
# vectors comes out near 1e-7, a volume near 3e-4, whose gradient is large but finite.)
_MIN_DET = 1e-12


def _safe_sqrt(x: jax.Array) -> jax.Array:
  # The inner `where` keeps sqrt's derivative finite in the branch that is not taken
  # (a bare where would still multiply its infinite derivative by 0 and give NaN).
  ok = x > _MIN_DET
  return jnp.where(ok, jnp.sqrt(jnp.where(ok, x, 1.0)), 0.0)


def gram_volume(v_nd: jax.Array) -> jax.Array:
  """Volume of the parallelotope spanned by the n rows of v [..., n, d]:

      vol(v_1..v_n) = sqrt(det G),   G_ij = <v_i, v_j>   (G = V V^T, n x n)

  For unit vectors and n = 2 this is sqrt(1 - cos^2(v_1, v_2)) = |sin angle|. It is 0
  when the rows are linearly dependent (two coincide) and 1 when they are orthonormal.
  """
  g = jnp.einsum("...nd,...md->...nm", v_nd.astype(jnp.float32), v_nd.astype(jnp.float32))
  return _safe_sqrt(jnp.linalg.det(g))


def volume_matrix(anchor_bd: jax.Array, others_kbd: jax.Array) -> jax.Array:
  """vol [B_anchor, B_candidate]: entry (i, j) is the volume of anchor i together with the
  k other modalities of candidate j, gram_volume([a_i, o_1j, ..., o_kj]).

  Built from inner products (B^2 k + B k^2 of them), not by stacking B^2 sets of vectors:
  G = [[<a_i,a_i>, <a_i,o_lj>], [<o_lj,a_i>, <o_lj,o_mj>]].
  """
  a = anchor_bd.astype(jnp.float32)
  o = others_kbd.astype(jnp.float32)
  b_a, b_c = a.shape[0], o.shape[1]
  cross_ijk = jnp.einsum("id,kjd->ijk", a, o)                      # <a_i, o_kj>
  within_jkl = jnp.einsum("kjd,ljd->jkl", o, o)                    # <o_kj, o_lj>
  self_i = jnp.sum(a * a, axis=-1)                                 # <a_i, a_i>
  top = jnp.concatenate([jnp.broadcast_to(self_i[:, None, None], (b_a, b_c, 1)), cross_ijk],
                        axis=-1)                                   # [Ba, Bc, 1+k]
  below = jnp.concatenate([cross_ijk[..., :, None],
                           jnp.broadcast_to(within_jkl[None], (b_a,) + within_jkl.shape)],
                          axis=-1)                                 # [Ba, Bc, k, 1+k]
  g = jnp.concatenate([top[:, :, None, :], below], axis=-2)        # [Ba, Bc, 1+k, 1+k]
  return _safe_sqrt(jnp.linalg.det(g))
