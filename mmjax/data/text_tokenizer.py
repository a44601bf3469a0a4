"""Text tokenizers: fixed-length int32 ids plus a validity mask, and word marks.

The default is byte-level: nothing to download or train, every string encodes,
and the vocabulary (259) is tiny, which suits the built-in world's short captions.
Every tokenizer also says where its words are (`words`): whole-word masking reads those
marks from the batch and so never needs to know a tokenizer's ids.
"""

import os

import numpy as np

PAD, BOS, EOS = 0, 1, 2
_WHITESPACE = b" \t\n\r\x0b\x0c"


def number_words(ids: np.ndarray, separator: np.ndarray, starts_word: np.ndarray) -> np.ndarray:
  """int32 like `ids` ([..., L]): each token's word number along the last axis (1, 2, ...),
  0 for tokens in no word. separator/starts_word: bool per vocabulary id; a word is a run
  of non-separators, and a token that starts a word (e.g. SentencePiece's "\u2581the")
  begins a new one even right after another word."""
  sep = separator[ids]
  prev_sep = np.concatenate([np.ones(ids.shape[:-1] + (1,), bool), sep[..., :-1]], axis=-1)
  begins = ~sep & (prev_sep | starts_word[ids])
  return np.where(sep, 0, np.cumsum(begins, axis=-1)).astype(np.int32)


class ByteTokenizer:
  """ids = utf-8 bytes + 3; 0/1/2 are pad/bos/eos."""

  offset = 3
  vocab_size = 256 + offset
  pad_id, bos_id, eos_id = PAD, BOS, EOS

  def __init__(self):
    # Words are runs of bytes between whitespace; pad, bos and eos are in no word.
    self._separator = np.zeros(self.vocab_size, bool)
    self._separator[[PAD, BOS, EOS]] = True
    self._separator[np.frombuffer(_WHITESPACE, np.uint8).astype(np.int64) + self.offset] = True
    self._starts_word = np.zeros(self.vocab_size, bool)

  def words(self, ids: np.ndarray) -> np.ndarray:
    """Each token's word number (`number_words`) for ids [..., L]."""
    return number_words(np.asarray(ids), self._separator, self._starts_word)

  def encode(self, text: str | bytes, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (ids int32[max_len], mask bool[max_len]); long text is cut at max_len."""
    data = text if isinstance(text, bytes) else text.encode("utf-8")
    body = np.frombuffer(data, np.uint8).astype(np.int32) + self.offset
    seq = np.concatenate([[BOS], body, [EOS]]).astype(np.int32)[:max_len]
    ids = np.full(max_len, PAD, np.int32)
    ids[:len(seq)] = seq
    return ids, ids != PAD

  def encode_batch(self, texts, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """`encode` of each text, stacked ([B, max_len] ids and mask), without a Python
    loop over characters: every byte lands at (row, 1 + its offset in the row)."""
    datas = [t if isinstance(t, bytes) else t.encode("utf-8") for t in texts]
    lengths = np.fromiter(map(len, datas), np.int64, len(datas))
    ids = np.full((len(datas), max_len), PAD, np.int32)
    if max_len == 0:
      return ids, ids != PAD
    ids[:, 0] = BOS
    rows = np.repeat(np.arange(len(datas)), lengths)
    cols = 1 + np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    body = np.frombuffer(b"".join(datas), np.uint8).astype(np.int32) + self.offset
    keep = cols < max_len
    ids[rows[keep], cols[keep]] = body[keep]
    eos = lengths + 1 < max_len
    ids[np.flatnonzero(eos), lengths[eos] + 1] = EOS
    return ids, ids != PAD

  def decode(self, ids) -> str:
    data = bytes(int(i) - self.offset for i in np.asarray(ids) if i >= self.offset)
    # A cut can split a multi-byte character; show it rather than fail.
    return data.decode("utf-8", errors="replace")


class SentencePieceTokenizer:
  """A trained SentencePiece model behind the byte tokenizer's interface.

  SentencePiece ids are shifted up by one so that 0 is always padding (its own
  id 0 is <unk>, and its pad id is usually disabled).
  """

  pad_id = PAD

  def __init__(self, model_path: str):
    try:
      import sentencepiece  # optional: only needed for this tokenizer
    except ImportError as e:
      raise ImportError("tokenizer kind 'sentencepiece' needs `pip install sentencepiece`") from e
    self._sp = sentencepiece.SentencePieceProcessor(model_file=model_path)
    self.vocab_size = self._sp.get_piece_size() + 1
    self.bos_id, self.eos_id = self._sp.bos_id() + 1, self._sp.eos_id() + 1
    # Pieces that start with "\u2581" (a space before them) start a word; padding, control
    # pieces (bos, eos) and a bare "\u2581" are in no word.
    pieces = [""] + [self._sp.id_to_piece(i) for i in range(self.vocab_size - 1)]
    control = [True] + [self._sp.is_control(i) for i in range(self.vocab_size - 1)]
    self._starts_word = np.array([p.startswith("\u2581") for p in pieces], bool)
    self._separator = np.array(control, bool) | np.array([p == "\u2581" for p in pieces], bool)

  def words(self, ids: np.ndarray) -> np.ndarray:
    """Each token's word number (`number_words`) for ids [..., L]."""
    return number_words(np.asarray(ids), self._separator, self._starts_word)

  def encode(self, text: str | bytes, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(text, bytes):
      text = text.decode("utf-8")
    seq = [self.bos_id] * (self.bos_id > 0) + [i + 1 for i in self._sp.encode(text)]
    seq = (seq + [self.eos_id] * (self.eos_id > 0))[:max_len]
    ids = np.full(max_len, PAD, np.int32)
    ids[:len(seq)] = seq
    return ids, np.arange(max_len) < len(seq)

  def encode_batch(self, texts, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    ids, masks = zip(*(self.encode(t, max_len) for t in texts))
    return np.stack(ids), np.stack(masks)

  def decode(self, ids) -> str:
    return self._sp.decode([int(i) - 1 for i in np.asarray(ids) if int(i) > 0])


TOKENIZERS = ("byte", "sentencepiece")


def vocab_size(kind: str = "byte", model_path: str = "") -> int:
  """How many ids the tokenizer makes (ids are < this); reads a SentencePiece model."""
  return ByteTokenizer.vocab_size if kind == "byte" else make_tokenizer(kind, model_path).vocab_size


def make_tokenizer(kind: str = "byte", model_path: str = ""):
  if kind == "byte":
    if model_path:
      raise ValueError(f"tokenizer kind 'byte' takes no model_path, got {model_path!r}")
    return ByteTokenizer()
  if kind == "sentencepiece":
    if not model_path or not os.path.exists(model_path):
      raise ValueError(f"tokenizer kind 'sentencepiece' needs model_path to an existing "
                       f".model file, got {model_path!r}")
    return SentencePieceTokenizer(model_path)
  raise ValueError(f"unknown tokenizer kind {kind!r}; choices: {TOKENIZERS}")
