"""End-to-end: the real `python -m mmjax.train` / `python -m mmjax.evaluate` on the tiny recipe."""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import ROOT, cli_env, run_cli, tiny_args, wait_for

pytestmark = pytest.mark.slow


def read_metrics(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def final_params(workdir, step: int) -> dict[str, np.ndarray]:
  """The saved arrays of one checkpoint, read back with Orbax (no model needed)."""
  import orbax.checkpoint as ocp
  with ocp.StandardCheckpointer() as c:
    tree = c.restore(os.path.join(workdir, "checkpoints", str(step), "state"))
  import jax
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def snapshot(directory) -> dict[str, tuple]:
  """(size, mtime) of every file below `directory`: shows nothing on disk changed."""
  out = {}
  for path in glob.glob(os.path.join(directory, "**"), recursive=True):
    if os.path.isfile(path):
      st = os.stat(path)
      out[path] = (st.st_size, st.st_mtime_ns)
  return out


def kill_after_first_checkpoint(workdir, args, first: int = 2) -> None:
  """Runs `mmjax.train args` and SIGKILLs it mid-run: after its first checkpoint (step
  `first`) exists, at a moment the test does not choose."""
  proc = subprocess.Popen([sys.executable, "-m", "mmjax.train", *args], cwd=ROOT, env=cli_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    wait_for(lambda: os.path.isdir(workdir / "checkpoints" / str(first)), 240,
             "a first checkpoint")
    time.sleep(np.random.default_rng().uniform(0.0, 1.0))
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
  assert proc.returncode == -signal.SIGKILL


def killed_and_resumed_matches_uninterrupted(world_dir, tmp_path, common, last_step,
                                              args=tiny_args, reference=None, first=2):
  """Trains uninterrupted (or takes `reference`, a finished run of the same arguments), and
  killed after checkpoint `first` then resumed; asserts the final checkpoints are
  bit-identical and returns its arrays. args: (workdir, data dir, *overrides) -> argv."""
  ref, killed = reference or tmp_path / "uninterrupted", tmp_path / "killed"
  if reference is None:
    run_cli("mmjax.train", args(ref, world_dir, *common))
  kill_after_first_checkpoint(killed, args(killed, world_dir, *common), first)
  run_cli("mmjax.train", args(killed, world_dir, *common))
  a, b = final_params(ref, last_step), final_params(killed, last_step)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  return a


@pytest.fixture(scope="module")
def trained(world_dir, tmp_path_factory):
  """One finished tiny run (12 steps, checkpoints at 6 and 12), shared by read-only tests."""
  workdir = tmp_path_factory.mktemp("trained")
  proc = run_cli("mmjax.train", tiny_args(workdir, world_dir))
  return workdir, proc


def test_workdir_layout_metrics_and_time_accounting(trained):
  workdir, proc = trained
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["12", "6"]
  cfg = json.load(open(os.path.join(workdir, "config.json")))
  assert cfg["total_steps"] == 12 and cfg["model"]["fusion"] == {"type": "early"}
  assert glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
  rows = read_metrics(workdir)
  train_rows = [r for r in rows if "train/default/loss" in r]
  assert [r["step"] for r in train_rows] == [4, 8, 12]
  assert all(np.isfinite(r["train/default/loss"]) for r in train_rows)
  assert all(k in train_rows[-1] for k in ("perf/examples_per_s", "perf/mfu", "train/learning_rate"))
  final = rows[-1]
  parts = [v for k, v in final.items() if k.startswith("time/") and k != "time/wall_s"]
  assert sum(parts) == pytest.approx(final["time/wall_s"], rel=1e-6)
  assert final["time/compile_s"] > 0 and final["time/step_s"] > 0
  evals = [r for r in rows if "default/retrieval/text_to_image/r@1" in r]
  assert evals and evals[-1]["step"] == 12
  assert "time: wall" in proc.stderr


def test_evaluate_cli_prints_one_json_object_and_writes_eval_dir(trained, world_dir):
  workdir, _ = trained
  proc = run_cli("mmjax.evaluate", ["--workdir", str(workdir),
                                    f"--config.tasks.default.data.data_dir={world_dir}"])
  lines = [l for l in proc.stdout.splitlines() if l.strip()]
  assert len(lines) == 1
  result = json.loads(lines[0])
  assert result["step"] == 12
  # Every example of the 256-example test split counted once (eval batch 64 -> 4 batches,
  # and the shuffled control too).
  assert result["default/retrieval/num_examples"] == 256
  assert result["default/classification/num_examples"] == 256
  # The evaluation the trainer ran at step 12, on the same parameters restored: the same
  # numbers (a restore or an evaluator that drifted from the trainer's would show here).
  in_training = [r for r in read_metrics(workdir)
                 if r["step"] == 12 and "default/retrieval/text_to_image/r@1" in r][-1]
  evaluated = {k: v for k, v in result.items() if k != "step" and not k.startswith("restore/")}
  assert evaluated and evaluated.keys() <= in_training.keys()
  for k, v in evaluated.items():
    assert v == pytest.approx(in_training[k], rel=1e-5, abs=1e-6), k
  for direction in ("text_to_image", "image_to_text"):
    r1, r5 = (result[f"default/retrieval/{direction}/r@{k}"] for k in (1, 5))
    assert r5 >= r1 and r5 > 0, (direction, r1, r5)
  assert json.load(open(os.path.join(workdir, "eval", "step_12.json"))) == result
  older = json.loads(run_cli("mmjax.evaluate", ["--workdir", str(workdir), "--step", "6",
                                                f"--config.tasks.default.data.data_dir={world_dir}"]
                             ).stdout)
  assert older["step"] == 6
  bad = run_cli("mmjax.evaluate", ["--workdir", str(workdir), "--step", "7"], check=False)
  assert bad.returncode != 0 and "no checkpoint for step 7" in bad.stderr and "[6, 12]" in bad.stderr


def test_resume_with_a_different_model_shape_is_refused_and_harmless(trained, world_dir):
  workdir, _ = trained
  before = snapshot(workdir)
  proc = run_cli("mmjax.train", tiny_args(workdir, world_dir, "--config.model.width=64",
                                          "--config.model.mlp_dim=128"), check=False)
  assert proc.returncode == 1
  assert "does not match the model this config builds" in proc.stderr
  assert "checkpoint has shape" in proc.stderr and "config needs" in proc.stderr
  after = snapshot(workdir)
  assert {k: v for k, v in after.items() if "metrics.jsonl" not in k} == \
         {k: v for k, v in before.items() if "metrics.jsonl" not in k}


def test_bad_command_lines_fail_before_compiling(tmp_path, world_dir):
  proc = run_cli("mmjax.train", tiny_args(tmp_path, world_dir, "--config.model.dept=2"),
                 check=False)
  assert proc.returncode == 2 and "did you mean 'depth'" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))
  proc = run_cli("mmjax.train", ["--workdir", str(tmp_path)], check=False)
  assert proc.returncode == 2 and "--config and --workdir are required" in proc.stderr
  proc = run_cli("mmjax.evaluate", ["--workdir", str(tmp_path / "nothing")], check=False)
  assert proc.returncode == 1 and "not an mmjax workdir" in proc.stderr


def test_sigkill_at_any_point_then_resume_is_bit_identical(trained, world_dir, tmp_path):
  # The shared finished run (checkpoints at 6 and 12) is the uninterrupted reference.
  a = killed_and_resumed_matches_uninterrupted(world_dir, tmp_path, [], 12,
                                               reference=trained[0], first=6)
  assert len(a) > 20


def test_moe_run_killed_then_resumed_is_bit_identical(world_dir, tmp_path):
  common = ["--config.checkpoint.every_steps=2", "--config.total_steps=4",
            "--config.model.ffn.type=moe", "--config.model.ffn.num_experts=4",
            "--config.model.ffn.routing=token_choice", "--config.evals.retrieval.every_steps=100",
            "--config.evals.retrieval_shuffled_images.every_steps=100",
            "--config.evals.classification.every_steps=100", "--config.evals.loss.every_steps=100"]
  a = killed_and_resumed_matches_uninterrupted(world_dir, tmp_path, common, 4)
  assert any("router" in k for k in a)
  rows = [r for r in read_metrics(tmp_path / "uninterrupted") if "train/default/loss" in r]
  assert any(k.endswith("layer0/moe/dead_experts") for k in rows[-1])


def packed_args(workdir, data_dir, *overrides) -> list[str]:
  """The tiny next-token recipe on packed interleaved documents (mmjax/data/packing.py)."""
  return ["--config", os.path.join(ROOT, "configs", "mm_world_nmm.py") + ":tiny_early_interleaved",
          "--workdir", str(workdir), f"--config.tasks.default.data.data_dir={data_dir}",
          *overrides]


def test_packed_run_killed_then_resumed_is_bit_identical(world_dir, tmp_path):
  """The packed pipeline's state (grain's packing state) is in the checkpoint: a run killed
  after its first checkpoint continues the same packed rows."""
  common = ["--config.checkpoint.every_steps=2", "--config.total_steps=6",
            "--config.evals.loss.every_steps=100"]
  killed_and_resumed_matches_uninterrupted(world_dir, tmp_path, common, 6, args=packed_args)
  with open(tmp_path / "killed" / "checkpoints" / "6" / "data" / "metadata") as f:
    assert "packed" in json.load(f)["default"]  # grain's packing state, saved


def test_sigterm_saves_and_exits_cleanly_then_resumes(world_dir, tmp_path):
  args = tiny_args(tmp_path, world_dir, "--config.total_steps=100000",
                   "--config.checkpoint.every_steps=50000")
  proc = subprocess.Popen([sys.executable, "-m", "mmjax.train", *args], cwd=ROOT, env=cli_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    wait_for(lambda: os.path.exists(tmp_path / "metrics.jsonl")
             and os.path.getsize(tmp_path / "metrics.jsonl") > 0, 240, "training to log")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == 0, err[-3000:]
  assert "saving step" in err and "rerun the same command to resume" in err
  steps = [int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()]
  assert len(steps) == 1 and 4 <= steps[0] < 100000
  # Resuming picks up from that step (a short total so it finishes now).
  proc = run_cli("mmjax.train", [*args[:-2], f"--config.total_steps={steps[0] + 2}",
                                 "--config.checkpoint.every_steps=50000"])
  assert f"resumed from {tmp_path}/checkpoints/{steps[0]}" in proc.stderr


def test_nan_halts_naming_the_step_and_keeps_the_last_good_checkpoint(world_dir, tmp_path):
  # A huge learning rate overflows the parameters after the first update.
  args = tiny_args(tmp_path, world_dir, "--config.optim.learning_rate=1e38",
                   "--config.optim.warmup_steps=0", "--config.checkpoint.every_steps=1")
  proc = run_cli("mmjax.train", args, check=False)
  assert proc.returncode == 1
  assert "non-finite loss or gradient at step 1" in proc.stderr
  assert "nan_policy=skip" in proc.stderr
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]
  params = final_params(tmp_path, 1)
  assert all(np.all(np.isfinite(v)) for v in params.values() if v.dtype.kind == "f")

  skip = tmp_path / "skip"
  proc = run_cli("mmjax.train", tiny_args(skip, world_dir, "--config.optim.learning_rate=1e38",
                                          "--config.optim.warmup_steps=0",
                                          "--config.nan_policy=skip"))
  rows = [r for r in read_metrics(skip) if "train/skipped_steps" in r]
  assert rows[-1]["train/skipped_steps"] >= 10


def test_leftover_temporary_checkpoint_does_not_block_resume(trained, world_dir, tmp_path):
  import shutil
  workdir = tmp_path / "copy"
  shutil.copytree(trained[0], workdir)
  # What a save killed mid-write leaves behind.
  tmp = workdir / "checkpoints" / "14.orbax-checkpoint-tmp-1700000000000000"
  (tmp / "state").mkdir(parents=True)
  (tmp / "state" / "garbage").write_bytes(b"\0" * 100)
  proc = run_cli("mmjax.train", tiny_args(workdir, world_dir, "--config.total_steps=14"))
  assert "resumed from" in proc.stderr and "/checkpoints/12" in proc.stderr
  assert "14" in os.listdir(workdir / "checkpoints")


def test_a_failed_save_stops_training_with_an_error(world_dir, tmp_path):
  # Root ignores permissions, so the failure is made with the filesystem itself: once the
  # first checkpoint exists, the checkpoint folder is moved aside and a plain file takes
  # its name, so every later write below it fails (NotADirectoryError), as on a broken mount.
  workdir = tmp_path / "run"
  args = tiny_args(workdir, world_dir, "--config.total_steps=100000",
                   "--config.checkpoint.every_steps=3")
  proc = subprocess.Popen([sys.executable, "-m", "mmjax.train", *args], cwd=ROOT, env=cli_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    wait_for(lambda: os.path.isdir(workdir / "checkpoints" / "3"), 240, "the first checkpoint")
    os.rename(workdir / "checkpoints", workdir / "checkpoints.moved")
    (workdir / "checkpoints").write_text("not a directory")
    _, err = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == 1, err[-3000:]
  assert "saving a checkpoint under" in err and "failed" in err, err[-3000:]
  assert os.path.isdir(workdir / "checkpoints.moved" / "3" / "state")  # the good one is intact
