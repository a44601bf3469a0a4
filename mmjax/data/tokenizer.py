"""Text tokenizers: fixed-length int32 ids plus a validity mask.

The default is byte-level: nothing to download or train, every string encodes,
and the vocabulary (259) is tiny, which suits the built-in world's short captions.
"""

import numpy as np

PAD, BOS, EOS = 0, 1, 2


class ByteTokenizer:
  """ids = utf-8 bytes + 3; 0/1/2 are pad/bos/eos."""

  offset = 3
  vocab_size = 256 + offset
  pad_id, bos_id, eos_id = PAD, BOS, EOS

  def encode(self, text: str | bytes, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (ids int32[max_len], mask bool[max_len]); long text is cut at max_len."""
    data = text if isinstance(text, bytes) else text.encode("utf-8")
    body = np.frombuffer(data, np.uint8).astype(np.int32) + self.offset
    seq = np.concatenate([[BOS], body, [EOS]]).astype(np.int32)[:max_len]
    ids = np.full(max_len, PAD, np.int32)
    ids[:len(seq)] = seq
    return ids, ids != PAD

  def decode(self, ids) -> str:
    data = bytes(int(i) - self.offset for i in np.asarray(ids) if i >= self.offset)
    # A cut can split a multi-byte character; show it rather than fail.
    return data.decode("utf-8", errors="replace")


TOKENIZERS = ("byte",)


def make_tokenizer(kind: str = "byte", model_path: str = ""):
  if kind == "byte":
    if model_path:
      raise ValueError(f"tokenizer kind 'byte' takes no model_path, got {model_path!r}")
    return ByteTokenizer()
  raise ValueError(f"unknown tokenizer kind {kind!r}; choices: {TOKENIZERS} "
                   "(SentencePiece is not implemented yet)")
