"""Early fusion over discrete tokens: image codes and caption bytes as rows of one table.

The data is a pretokenized mm_world (docs/discrete_tokens.md): first train a tokenizer
(configs/mm_world_tokenizer.py), then
  python -m mmjax.pretokenize --tokenizer WORKDIR --dataset mm_world/default --out DATA_DIR
and point this recipe's data_dir at DATA_DIR (or write into $MMJAX_DATA_DIR).

The model is mm_world_fusion.py's early-fusion trunk with both modalities of kind
`discrete`: one embedding table over the extended vocabulary (text 259 byte ids, image
1,000 FSQ codes, 2 special rows kept free for later use), with each modality's offset in
the model spec. The task is mm_world_fusion.py's: text<->image contrastive, and caption
matching (one fused pass over caption + image tokens), scored on the test split.

Variants: default (mm_world_tokens/default), tiny (mm_world_tokens/tiny: what tests run).
"""
import os

from mmjax.config.recipe import import_file

TEXT_IDS, IMAGE_CODES, SPECIALS = 259, 1000, 2  # byte tokenizer; FSQ levels (8, 5, 5, 5)
IMAGE_TOKENS = 64                               # 32x32 images at the tokenizer's stride 4
VOCAB = (("text", TEXT_IDS), ("image", IMAGE_CODES), ("special", SPECIALS))


def _fusion():
  return import_file(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                  "mm_world_fusion.py"), "recipe")


def get_config(variant=None):
  variant = variant or "default"
  if variant not in ("default", "tiny"):
    raise ValueError(f"configs/mm_world_discrete.py: unknown variant {variant!r}; "
                     f"valid: default, tiny")
  tiny = variant == "tiny"
  c = _fusion().get_config("tiny_early" if tiny else "early")
  table = dict(kind="discrete", vocab=VOCAB, vocab_size=sum(n for _, n in VOCAB))
  text_len = c.model.modalities.text.shape
  c.model.modalities = dict(
      image=dict(table, shape=(IMAGE_TOKENS,), segment="image"),
      text=dict(table, shape=text_len, segment="text"))
  data = c.tasks.default.data
  data.name = "mm_world_tokens/tiny" if tiny else "mm_world_tokens/default"
  with data.preprocess.unlocked():
    data.preprocess.image = dict(op="ids", **{"from": "image_tokens"})
  return c
