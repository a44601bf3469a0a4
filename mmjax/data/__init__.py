"""Input: the built-in world (a TFDS builder writing ArrayRecord), dataset sources, the
preprocessing ops, text tokenizers and grain pipelines (sharded by process, shuffled,
batched, checkpointable), prefetching onto the devices. May import errors only: no models,
objectives, evaluators or training code (.importlinter).
"""
