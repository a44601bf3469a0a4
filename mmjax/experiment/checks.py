"""Checks that span a recipe's sections, run while it is parsed (mmjax/experiment/experiment.py),
before anything is built or compiled. Each component parses, and so checks, its own section;
what is here is the rest: the top level's values, and each task's objectives, data and
resolutions against the model."""
from __future__ import annotations

from mmjax import objectives as objectives_lib
from mmjax.config import task_checks
from mmjax.config.registry import FieldError
from mmjax.config.value_checks import check_finite_floats
from mmjax.errors import ConfigError, MmjaxError
from mmjax.models.ffn.moe.config import MoeConfig
from mmjax.models.trunks import TRUNKS

NAN_POLICIES = ("halt", "skip")


def _need(cond: bool, msg: str) -> None:
  if not cond:
    raise ConfigError(msg)


def _positive_int(config, key: str) -> None:
  node = config
  for p in key.split("."):
    node = node[p]
  _need(isinstance(node, int) and not isinstance(node, bool) and node > 0,
        f"config.{key}={node!r}: must be a positive integer")


def _count(value, key: str, meaning: str) -> None:
  _need(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
        f"config.{key}={value!r}: must be an integer >= 0{meaning}")


def _check_vocab(tname: str, data_cfg, spec, pipeline) -> None:
  """Each text modality a tokenize op feeds has an embedding row for every id it can get."""
  kinds = {name: args.get("op") for name, args in data_cfg.preprocess.items()}
  texts = [m for m, s in spec.modalities.items()
           if s.kind in ("text", "discrete") and kinds.get(m) == "tokenize"]
  if not texts:
    return
  try:
    n = pipeline.tokenizer_vocab_size(data_cfg)
  except (ImportError, ValueError) as e:
    raise ConfigError(f"config.tasks.{tname}.data.tokenizer: {e}") from None
  for m in texts:
    s = spec.modalities[m]  # a discrete modality's ids have its segment's rows
    v, what, fix = ((dict(s.vocab)[s.segment], f".vocab segment {s.segment!r} of size ",
                     f"a {s.segment!r} segment of")
                    if s.kind == "discrete" else (s.vocab_size, ".vocab_size=", "vocab_size"))
    _need(v >= n, f"config.model.modalities.{m}{what}{v} is smaller than the {n} ids "
          f"of config.tasks.{tname}.data.tokenizer (kind "
          f"{data_cfg.get('tokenizer', {}).get('kind', 'byte')!r}): ids >= {v} would have no "
          f"embedding; use {fix} >= {n}")


def check_top_level(config) -> None:
  """The run's own values: steps, periods, policies, the optimizer's numbers."""
  check_finite_floats(config, ConfigError)
  for key in ("total_steps", "log_every_steps", "eval_batch_size", "checkpoint.every_steps",
              "checkpoint.keep"):
    _positive_int(config, key)
  if "watchdog_timeout_s" in config:
    _need(config.watchdog_timeout_s >= 0,
          f"config.watchdog_timeout_s={config.watchdog_timeout_s}: must be >= 0 (0 = off)")
  if "stop_check_every_steps" in config:
    _positive_int(config, "stop_check_every_steps")
  if "prefetch_batches" in config:
    _count(config.prefetch_batches, "prefetch_batches", "")
  if "compile_threads" in config:
    _count(config.compile_threads, "compile_threads",
           " (0 = a thread per task, 1 = one task after another)")
  _need(config.nan_policy in NAN_POLICIES,
        f"config.nan_policy={config.nan_policy!r}; valid: {', '.join(map(repr, NAN_POLICIES))}")
  o = config.optim
  _need(o.learning_rate > 0, f"config.optim.learning_rate={o.learning_rate}: must be > 0")
  _need(0 <= o.warmup_steps <= config.total_steps,
        f"config.optim.warmup_steps={o.warmup_steps}: must be in [0, total_steps={config.total_steps}]")
  _need(o.clip_norm > 0, f"config.optim.clip_norm={o.clip_norm}: must be > 0")
  _need(len(config.tasks) > 0, "config.tasks is empty; define at least one task")


def check_task(tname: str, task, settings, objectives, spec) -> None:
  """A task's objectives against its data, its dataset and input resolutions against the
  model, and its token drop. Reads no data."""
  from mmjax.data import pipeline  # local: the data stack imports grain and TFDS
  _need(len(task.objectives) > 0, f"config.tasks.{tname}.objectives is empty")
  pp = task.data.preprocess
  made = pipeline.output_keys(task.data)
  for o_ in objectives:
    for k in o_.batch_keys():
      if k == "text_mask":
        continue
      _need(k in made, f"config.tasks.{tname}: objective {o_.name!r} needs batch key {k!r}, "
            f"but tasks.{tname}.data.preprocess only makes {sorted(made)}")
  try:  # names a dataset (a built-in world, a TFDS name or a prepared folder)?
    pipeline.check_dataset_name(task.data.name, task.data.get("data_dir", ""))
  except MmjaxError as e:
    raise ConfigError(f"config.tasks.{tname}.data.name: {e}") from None
  try:  # worker_count for this host, preprocess ops and their arguments; reads no data
    pipeline.validate(task.data, batch_size=settings.batch_size)
  except (MmjaxError, ValueError) as e:
    raise ConfigError(f"config.tasks.{tname}.data: {e}") from None
  for name, shape in pipeline.input_shapes(task.data).items():
    if name in spec.modalities:
      task_checks.check_resolution(f"tasks.{tname}.data.preprocess.{name}", pp[name], shape,
                                   spec.modalities[name], f"model.modalities.{name}",
                                   spec.posemb)
  _check_vocab(tname, task.data, spec, pipeline)
  task_checks.check_token_drop(tname, settings.token_drop, objectives, set(pp.keys()))
  check_attention(tname, objectives, spec)
  check_packing(tname, pipeline.packing_config(task.data), settings, objectives, spec)
  check_against_model(tname, objectives, spec)


def check_packing(tname: str, pack, settings, objectives, spec) -> None:
  """A packed task (data.packing) needs a model that keeps its examples apart: one trunk
  sequence with TokenInfo's segment mask (early fusion), no CLS token (one per row would
  mix the examples), no token drop, and objectives that score tokens, not rows."""
  if pack is None:
    return
  key = f"config.tasks.{tname}.data.packing"
  trunk = TRUNKS.type_name(spec.fusion)
  _need(trunk == "early", f"{key}: packed rows need config.model.fusion.type='early' (one "
        f"sequence whose segment mask keeps the examples apart); got {trunk!r}: remove "
        f"data.packing or use early fusion")
  _need(spec.pool != "cls", f"{key}: config.model.pool='cls' adds one CLS token per row, "
        f"which would see every packed example; use pool='mean' or remove data.packing")
  _need(not settings.token_drop, f"{key}: token drop ({dict(settings.token_drop)}) is not "
        f"supported on packed rows; remove one of the two")
  routing = getattr(spec.ffn, "routing", "dropless") if isinstance(spec.ffn, MoeConfig) else ""
  _need(routing in ("", "dropless"), f"{key}: config.model.ffn.routing={routing!r} drops "
        f"tokens by capacity over the whole row, so one packed example's tokens would decide "
        f"which of another's are processed; use routing='dropless' or remove data.packing")
  for o in objectives:
    kind = objectives_lib.OBJECTIVES.type_name(o)
    _need(kind == "next_token", f"{key}: objective {o.name!r} ({kind}) scores whole rows, "
          f"which hold several examples when packed; only next_token objectives score "
          f"packed rows per token")
  text = spec.modalities.get(pack.text)
  _need(text is not None and text.kind == "text", f"{key}.text={pack.text!r} is not a text "
        f"modality of config.model.modalities ({sorted(spec.modalities)})")

def check_against_model(tname: str, objectives, spec) -> None:
  """Objectives whose values depend on the model (4M's token budgets against the token
  counts) check them in their optional `check_model(spec)`."""
  for o in objectives:
    if not hasattr(o, "check_model"):
      continue
    try:
      o.check_model(spec)
    except FieldError as e:
      raise ConfigError(f"config.tasks.{tname}.objectives.{o.name}.{e.field}="
                        f"{getattr(o, e.field)!r}: {e}") from None


def _causal_routing_problem(ffn) -> str | None:
  """Why this feed-forward layer would let a causal token's output depend on later tokens."""
  if not isinstance(ffn, MoeConfig):
    return None
  if ffn.routing == "expert_choice":
    return ("config.model.ffn.routing='expert_choice': each expert picks its tokens among the "
            "whole group, so whether a token is processed depends on the tokens after it; use "
            "routing='dropless' (or 'token_choice' with top_k=1)")
  if ffn.routing == "token_choice" and ffn.top_k > 1:
    return (f"config.model.ffn.routing='token_choice' with top_k={ffn.top_k}: every token's "
            f"first choice takes capacity before any second choice (GShard), so whether a "
            f"token's second choice is kept depends on the tokens after it; use "
            f"routing='dropless' or top_k=1")
  return None


def check_attention(tname: str, objectives, spec) -> None:
  """Objectives that attend causally (next_token) need a trunk and a feed-forward layer
  under which no token sees the tokens after it, and a text modality to predict."""
  for o in objectives:
    causal = objectives_lib.causal_modalities(o)
    if not causal:
      continue
    key = f"config.tasks.{tname}.objectives.{o.name}"
    for m in causal:
      kind = spec.modalities[m].kind
      _need(kind == "text", f"{key}: predicts the next token of {m!r}, a {kind} modality; "
            f"next-token prediction needs a text modality (discrete tokens)")
    trunk = TRUNKS.type_name(spec.fusion)
    for group in o.forward_passes():
      problem = spec.fusion.causal_problem(spec.depth, tuple(m for m in causal if m in group),
                                           tuple(group))
      _need(problem is None, f"{key} attends causally over {list(causal)}, which "
            f"config.model.fusion.type={trunk!r} cannot do soundly: {problem}")
    problem = _causal_routing_problem(spec.ffn)
    _need(problem is None, f"{key} attends causally over {list(causal)}, but {problem}")
