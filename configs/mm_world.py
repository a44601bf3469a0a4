"""Early-fusion pretraining on the built-in procedural world (mm_world).

Variants:
  default  the README's main job: text<->image contrastive + video+audio classification,
           sized to finish (build, train, eval) in under 15 minutes on a 2-core CPU.
  tiny     seconds on a laptop CPU; what the tests drive through the real trainer.
  scaling  the base of scaling-law sweeps (configs/sweeps/): tiny-sized, trained and scored on
           one per-token loss -- whole-word masked caption modelling that hears the audio --
           on the default world's 40k training scenes (so small token budgets never repeat data).
"""
import ml_collections as mlc

from mmjax.runtime import sharding


def _data(name: str):
  return mlc.ConfigDict(dict(
      name=name,
      data_dir="",          # "" = $MMJAX_DATA_DIR or ~/.cache/mmjax/tensorflow_datasets
      train_split="train",
      eval_split="test",
      worker_count=-1,      # -1: auto from the host's cores (in process on <= 2 cores: measured)
      tokenizer=dict(kind="byte", model_path=""),
      preprocess=dict(
          image=dict(op="image", **{"from": "image"}, size=32),
          video=dict(op="video", **{"from": "video"}, size=16, frames=4),
          audio=dict(op="log_mel", **{"from": "audio"}, sample_rate=8000, num_mels=32,
                     frame=256, hop=64, samples=2240),  # 1 + (2240-256)//64 = 32 frames
          text=dict(op="tokenize", **{"from": "caption"}, max_len=48),
          label=dict(op="label", **{"from": "label"}),
          content_id=dict(op="label", **{"from": "content_id"}),
      )))


def get_config(variant=None):
  variant = variant or "default"
  if variant not in ("default", "tiny", "scaling"):
    raise ValueError(f"configs/mm_world.py: unknown variant {variant!r}; "
                     f"valid: default, tiny, scaling")
  if variant == "scaling":
    return _scaling_config(get_config("tiny"))
  tiny = variant == "tiny"
  c = mlc.ConfigDict()
  c.seed = 0
  c.total_steps = 12 if tiny else 400
  c.log_every_steps = 4 if tiny else 25
  c.nan_policy = "halt"         # "halt": stop naming the step; "skip": drop the update
  c.eval_batch_size = 64 if tiny else 250
  c.progress = not tiny         # a progress bar on stderr
  c.watchdog_timeout_s = 600    # end the job if no step completes this long (0 = off)
  c.prefetch_batches = 2        # input read ahead in a thread (0 = off); exact resume either way
  c.stop_check_every_steps = 10  # processes agree on a stop signal every this many steps
  c.compile_threads = 0         # start-up compile of every task's step: 0 = a thread per task

  c.model = mlc.ConfigDict(dict(
      width=32 if tiny else 128,
      depth=1 if tiny else 4,
      num_heads=2 if tiny else 4,
      mlp_dim=64 if tiny else 512,
      fusion=dict(type="early"),   # mmjax/models/trunks: early
      ffn=dict(type="mlp"),         # mmjax/models/ffn: mlp
      embed_dim=32 if tiny else 128,
      posemb="learn",
      posemb_std=0.5,
      dtype="auto",             # compute: bfloat16 on GPU/TPU, float32 on CPU
      param_dtype="float32",
      remat="none",     # per block: none | full | save_matmuls (recompute the rest)
      modalities=dict(
          image=dict(kind="image", shape=(32, 32, 3), patch=(8,)),
          video=dict(kind="video", shape=(4, 16, 16, 3), patch=(2, 8)),
          audio=dict(kind="audio", shape=(32, 32), patch=(8, 8)),
          text=dict(kind="text", shape=(48,), vocab_size=259),
      )))

  c.tasks = mlc.ConfigDict()
  c.tasks.default = mlc.ConfigDict(dict(
      data=_data("mm_world/tiny" if tiny else "mm_world/default"),
      batch_size=16 if tiny else 256,
      microbatches=1,   # gradient accumulation: the batch is split into this many passes
      weight=1.0,
      objectives=dict(
          text_image=dict(type="contrastive", a="text", b="image", kind="softmax", weight=1.0),
          av_label=dict(type="classification", inputs=("video", "audio"), label="label",
                        num_classes=20, weight=0.5),
      )))

  c.schedule = mlc.ConfigDict(dict(type="weighted"))  # which task each step trains

  c.optim = mlc.ConfigDict(dict(
      learning_rate=3e-3 if tiny else 2e-3, warmup_steps=2 if tiny else 50,
      end_lr_fraction=0.0, weight_decay=0.05, b1=0.9, b2=0.98, clip_norm=1.0))

  c.checkpoint = mlc.ConfigDict(dict(every_steps=6 if tiny else 200, keep=2, async_save=True))

  # In-slice (ICI) axis sizes, and dcn_* sizes across slices/nodes; -1 = the rest.
  c.mesh = mlc.ConfigDict(dict(data=-1, fsdp=1, tensor=1, expert=1,
                               dcn_data=1, dcn_fsdp=1, dcn_tensor=1, dcn_expert=1))
  c.sharding = mlc.ConfigDict(dict(
      rules=dict(sharding.RULES),        # logical axis -> mesh axis/axes/None; override per key
      max_replicated_params=1 << 20,     # on an fsdp mesh, larger params must be sharded
  ))

  every = c.total_steps
  c.evals = mlc.ConfigDict(dict(
      retrieval=dict(type="retrieval", task="default", a="text", b="image", every_steps=every),
      retrieval_shuffled_images=dict(type="retrieval", task="default", a="text", b="image",
                                     shuffle=True, every_steps=every),
      classification=dict(type="classification", task="default", objective="av_label",
                          every_steps=every),
      loss=dict(type="loss", task="default", split="validation", every_steps=every),
  ))
  return c


def _scaling_config(c):
  """Tiny model, default world, one objective whose validation loss is the sweep's target.

  The default target is whole-word masked caption modelling with the AUDIO in context
  (objectives/masked.py, unit="word"): a per-token cross-entropy, so unlike a contrastive
  loss it does not depend on the batch size, and unlike 20-way classification it does not
  saturate near zero. Why these choices: a scaling law L = E + A/N^a + B/D^b needs a loss
  with a floor E > 0 that models approach as they grow, and here it can be computed
  (mmjax/scaling/caption_floor.py): hiding single bytes leaves every caption recoverable
  from its visible bytes (floor 0.015 nats with the audio), and the image determines every
  caption word (floor 0); with whole words hidden and the audio -- which says the shape
  (pitch) but not the colour, size or position -- the floor is 0.25 nats per hidden token:
  the world's own uncertainty. The model must still fuse the audio to reach it (the shape word).
  """
  c.unlock()
  c.total_steps = 200
  c.log_every_steps = 50
  c.eval_batch_size = 256
  c.tasks.default.data = _data("mm_world/default")
  c.tasks.default.batch_size = 32
  c.tasks.default.objectives = mlc.ConfigDict(dict(
      caption_mlm=dict(type="masked", modality="text", context=("audio",), ratio=0.5,
                       unit="word", weight=1.0)))
  c.optim.warmup_steps = 20
  c.checkpoint.every_steps = c.total_steps
  c.evals = mlc.ConfigDict(dict(
      loss=dict(type="loss", task="default", split="validation", every_steps=c.total_steps)))
  return c
