"""The model: modality embedders and patchify functions, the attention facts of the tokens
(`token_info.py`), fusion trunks (`trunks/`: early, bottleneck, late), feed-forward layers
(`ffn/`: mlp, moe), heads, the model spec (`spec.py`) and logical axis names
(`logical_axes.py`). Flax NNX modules used functionally at the jit boundary.
May import config (the registry base) and errors only: no objectives, evaluators, data,
training, checkpoint or runtime code (.importlinter).
"""
