"""python -m mmjax.pretokenize: stored ids equal the tokenizer's online ids, a rerun changes
nothing, the result reads by name through the data pipeline, and bad input is refused in
one line before anything is written."""
import hashlib
import json
import os

import numpy as np
import pytest

from mmjax.data import pipeline
from mmjax.data import preprocess as preprocess_lib
from mmjax.data import text_tokenizer
from mmjax.pretokenize import layout, run
from mmjax.pretokenize import tokenizer as tokenizer_lib
from mmjax.pretokenize.tokenizer import PretokenizeError
from tests.conftest import ROOT, run_cli

RECIPE = f"{ROOT}/configs/mm_world_tokenizer.py:tiny"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, world_dir):
  """A tiny tokenizer trained 2 steps by the real trainer (an Orbax checkpoint at step 2)."""
  workdir = tmp_path_factory.mktemp("tok") / "workdir"
  run_cli("mmjax.train", ["--config", RECIPE, "--workdir", str(workdir),
                          f"--config.tasks.default.data.data_dir={world_dir}",
                          "--config.total_steps=2", "--config.optim.warmup_steps=1",
                          "--config.checkpoint.every_steps=2",
                          "--config.evals.tokenizer.every_steps=100",
                          "--config.evals.loss.every_steps=100"])
  return str(workdir)


def _files(directory):
  """{file: (mtime_ns, sha256)} of every file under `directory`."""
  out = {}
  for root, _, names in os.walk(directory):
    for n in names:
      p = os.path.join(root, n)
      out[p] = (os.stat(p).st_mtime_ns, hashlib.sha256(open(p, "rb").read()).hexdigest())
  return out


def _online_ids(tok, world_dir, split, n):
  """The tokenizer run directly on the source's first n examples of `split`."""
  source = pipeline.get_source("mm_world/tiny", split, world_dir)
  images = preprocess_lib.Preprocess(
      {"image": dict(tok.image_op)}, tokenizer=text_tokenizer.make_tokenizer("byte"),
      train=False).batch(source.read_batch(np.arange(n)))["image"]
  return tok.encode(images), source.read_batch(np.arange(n))


@pytest.mark.slow
def test_pretokenized_ids_equal_online_ids_and_a_rerun_changes_nothing(
    tmp_path, world_dir, tokenizer_dir):
  req = run.Request(tokenizer=tokenizer_dir, dataset="mm_world/tiny", out=str(tmp_path / "out"),
                    data_dir=world_dir, batch_size=96, shard_size=200)
  first = run.pretokenize(req)
  assert first["dataset"] == "mm_world_tokens/tiny" and first["skipped"] == 0
  assert first["written"] == 512 + 128 + 256 and first["tokens_per_image"] == 64
  before = _files(tmp_path / "out")
  again = run.pretokenize(req)
  assert again["written"] == 0 and again["skipped"] == first["written"]
  assert _files(tmp_path / "out") == before  # no file rewritten, not even touched
  # Read by name, like any dataset: 3 shards of test (200, 56), in the source's order.
  stored = pipeline.get_source("mm_world_tokens/tiny", "test", str(tmp_path / "out"))
  assert len(stored) == 256 and len(stored.files) == 2
  online, columns = _online_ids(tokenizer_lib.load(tokenizer_dir), world_dir, "test", 256)
  batch = stored.read_batch(np.arange(256))
  np.testing.assert_array_equal(batch["image_tokens"], online)
  assert batch["caption"] == columns["caption"]
  np.testing.assert_array_equal(batch["label"], columns["label"])
  assert "image" not in batch and "video" not in batch  # pixels are not copied
  # A task reads it through the grain pipeline with ordinary preprocess ops.
  data = dict(name="mm_world_tokens/tiny", data_dir=str(tmp_path / "out"), eval_split="test",
              worker_count=0, tokenizer=dict(kind="byte", model_path=""),
              preprocess=dict(image_tokens=dict(op="ids", **{"from": "image_tokens"}),
                              text=dict(op="tokenize", **{"from": "caption"}, max_len=48)))
  eval_batch = next(iter(pipeline.iter_eval_batches(data, split="test", batch_size=32)))
  np.testing.assert_array_equal(eval_batch["image_tokens"], online[:32])
  assert eval_batch["text"].shape == (32, 48)


@pytest.mark.slow
def test_another_tokenizers_output_is_refused_unless_overwrite(tmp_path, world_dir,
                                                               tokenizer_dir):
  out = tmp_path / "out"
  req = run.Request(tokenizer=tokenizer_dir, dataset="mm_world/tiny", out=str(out),
                    data_dir=world_dir, shard_size=1000)
  run.pretokenize(req)
  manifest_dir = layout.dataset_dir(str(out), "mm_world_tokens", "tiny")
  manifest = layout.read_manifest(manifest_dir)
  manifest["fingerprint"] = "0" * 64  # as written by a tokenizer with other parameters
  layout.write_json_atomic(os.path.join(manifest_dir, layout.MANIFEST), manifest)
  before = _files(out)
  with pytest.raises(PretokenizeError, match="holds pretokenized data of another tokenizer"):
    run.pretokenize(req)
  assert _files(out) == before  # refused before writing anything
  redone = run.pretokenize(run.Request(**{**vars(req), "overwrite": True}))
  assert redone["written"] == 896 and redone["skipped"] == 0
  assert layout.read_manifest(manifest_dir)["fingerprint"] != "0" * 64


def test_bad_input_is_refused_in_one_line_before_anything_runs(tmp_path, world_dir):
  out = tmp_path / "out"
  base = dict(tokenizer=str(tmp_path / "nowhere"), dataset="mm_world/tiny", out=str(out),
              data_dir=world_dir)
  with pytest.raises(PretokenizeError, match="--tokenizer .*nowhere' is not a folder"):
    run.pretokenize(run.Request(**base))
  with pytest.raises(PretokenizeError, match="--dataset: unknown dataset 'mm_world/huge'"):
    run.pretokenize(run.Request(**{**base, "dataset": "mm_world/huge"}))
  no_ckpt = tmp_path / "no_ckpt"
  no_ckpt.mkdir()
  with pytest.raises(PretokenizeError, match="is not an mmjax workdir"):
    run.pretokenize(run.Request(**{**base, "tokenizer": str(no_ckpt)}))
  assert not out.exists()


@pytest.mark.slow
def test_the_command_line_reports_bad_input_in_one_line(tmp_path):
  out = tmp_path / "out"
  proc = run_cli("mmjax.pretokenize", ["--tokenizer", str(tmp_path), "--dataset", "nope/x",
                                       "--out", str(out)], check=False, timeout=120)
  assert proc.returncode == 2 and proc.stdout == ""
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: --dataset: unknown dataset 'nope/x'"), proc.stderr
  assert not out.exists()


@pytest.mark.slow
def test_a_workdir_without_a_finished_checkpoint_or_a_foreign_out_folder_is_refused(
    tmp_path, world_dir, tokenizer_dir):
  config_only = tmp_path / "config_only"
  config_only.mkdir()
  (config_only / "config.json").write_bytes(open(os.path.join(tokenizer_dir, "config.json"),
                                                 "rb").read())
  base = dict(tokenizer=str(config_only), dataset="mm_world/tiny", out=str(tmp_path / "o"),
              data_dir=world_dir)
  with pytest.raises(PretokenizeError, match="has no finished checkpoint"):
    run.pretokenize(run.Request(**base))
  foreign = tmp_path / "foreign" / "mm_world_tokens" / "tiny" / "1.0.0"
  foreign.mkdir(parents=True)
  (foreign / "notes.txt").write_text("mine")
  with pytest.raises(PretokenizeError, match="holds files that pretokenize did not write"):
    run.pretokenize(run.Request(**{**base, "tokenizer": tokenizer_dir,
                                   "out": str(tmp_path / "foreign"), "overwrite": True}))
  assert json.dumps(os.listdir(foreign)) == '["notes.txt"]'
