"""Nothing a user does to a workdir loses a checkpoint (issue 7), end to end with real
processes and files: one writer, read-only readers, verified restores, crash-safe metrics,
clear one-line errors that leave no workdir behind."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from mmjax.checkpoint import checksums as checkpoint_verify
from tests.conftest import ROOT, cli_env, run_cli, tiny_args, wait_for
from tests.test_train_e2e import final_params, read_metrics

pytestmark = pytest.mark.slow


def committed_steps(workdir) -> list[int]:
  return sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())


def test_live_workdir_one_writer_and_read_only_readers(world_dir, tmp_path):
  workdir = tmp_path / "run"
  args = tiny_args(workdir, world_dir, "--config.total_steps=100000",
                   "--config.checkpoint.every_steps=3", "--config.checkpoint.keep=2")
  trainer = subprocess.Popen([sys.executable, "-m", "mmjax.train", *args], cwd=ROOT,
                             env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
  try:
    wait_for(lambda: os.path.isdir(workdir / "checkpoints" / "3"), 240, "a first checkpoint")
    # A second trainer on the live workdir is refused, naming the holder.
    second = run_cli("mmjax.train", args, check=False)
    assert second.returncode == 1, second.stderr[-3000:]
    assert "is in use by another trainer" in second.stderr
    assert f"pid {trainer.pid}" in second.stderr and socket.gethostname() in second.stderr
    assert "since 20" in second.stderr and "Traceback" not in second.stderr
    # Readers while it saves every 3 steps and deletes all but the newest 2.
    for _ in range(2):
      out = run_cli("mmjax.evaluate", ["--workdir", str(workdir),
                                       f"--config.tasks.default.data.data_dir={world_dir}"])
      assert json.loads(out.stdout.strip().splitlines()[-1])["step"] % 3 == 0
  finally:
    trainer.send_signal(signal.SIGTERM)
    try:
      _, err = trainer.communicate(timeout=120)
    finally:
      trainer.kill()
  assert trainer.returncode == 0, err[-3000:]
  assert not os.path.exists(workdir / "lock")
  names = os.listdir(workdir / "checkpoints")
  assert not [n for n in names if "tmp" in n], names
  for step in committed_steps(workdir):  # every committed step verifies and restores
    assert checkpoint_verify.problems(str(workdir / "checkpoints" / str(step))) == []
    assert len(final_params(workdir, step)) > 20
  steps = [r["step"] for r in read_metrics(workdir) if "train/default/loss" in r]
  assert steps == sorted(set(steps))  # one writer: no step logged twice


@pytest.fixture(scope="module")
def finished(world_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("finished")
  run_cli("mmjax.train", tiny_args(workdir, world_dir))  # checkpoints 6 and 12
  return workdir


def largest_file(step_dir):
  files = [os.path.join(r, n) for r, _, ns in os.walk(step_dir) for n in ns]
  return max(files, key=os.path.getsize)


def test_silent_corruption_is_refused_by_evaluate(finished, world_dir, tmp_path):
  workdir = tmp_path / "w"
  shutil.copytree(finished, workdir)
  victim = largest_file(workdir / "checkpoints" / "12" / "state")
  with open(victim, "r+b") as f:
    f.seek(os.path.getsize(victim) // 2)
    f.write(b"\xff" * 64)
  proc = run_cli("mmjax.evaluate", ["--workdir", str(workdir),
                                    f"--config.tasks.default.data.data_dir={world_dir}"],
                 check=False)
  assert proc.returncode == 1
  assert f"checkpoint step 12 in {workdir}/checkpoints is damaged" in proc.stderr
  assert "does not match its checksum" in proc.stderr and "Traceback" not in proc.stderr
  assert os.path.exists(victim)  # a reader moves nothing


def test_truncated_latest_step_is_named_kept_and_the_run_resumes_before_it(finished, world_dir,
                                                                             tmp_path):
  workdir = tmp_path / "w"
  shutil.copytree(finished, workdir)
  victim = largest_file(workdir / "checkpoints" / "12" / "state")
  with open(victim, "r+b") as f:
    f.truncate(100)
  with open(workdir / "metrics.jsonl", "a") as f:
    f.write('{"step": 13, "train/def')  # what a crash mid-write leaves
  proc = run_cli("mmjax.train", tiny_args(workdir, world_dir))
  assert f"checkpoint step 12 in {workdir}/checkpoints is damaged" in proc.stderr
  assert "has 100 bytes" in proc.stderr and "nothing was deleted" in proc.stderr
  assert f"resumed from {workdir}/checkpoints/6" in proc.stderr
  moved = os.listdir(workdir / "checkpoints_damaged")
  assert len(moved) == 1 and moved[0].startswith("12-")
  assert committed_steps(workdir) == [6, 12]
  steps = [r["step"] for r in read_metrics(workdir) if "train/default/loss" in r]
  assert steps == [4, 8, 12]  # the partial line dropped, rows past step 6 not doubled
  assert os.path.exists(workdir / "metrics.superseded.jsonl")
  assert not os.path.exists(workdir / "config_history")  # nothing changed


def test_resume_with_changed_settings_warns_and_keeps_the_old_config(finished, world_dir,
                                                                       tmp_path):
  workdir = tmp_path / "w"
  shutil.copytree(finished, workdir)
  # Resumes at the last step (12 of 12), so nothing new is compiled for the new batch size.
  proc = run_cli("mmjax.train", tiny_args(workdir, world_dir, "--config.tasks.default.batch_size=8",
                                          "--config.log_every_steps=3"))
  assert "resuming with changed settings: log_every_steps, tasks.default.batch_size" in proc.stderr
  kept = os.listdir(workdir / "config_history")
  assert len(kept) == 1
  old = json.load(open(workdir / "config_history" / kept[0]))
  assert old["tasks"]["default"]["batch_size"] == 16 and old["log_every_steps"] == 4
  assert json.load(open(workdir / "config.json"))["tasks"]["default"]["batch_size"] == 8


def test_full_disk_ends_the_run_with_one_clear_line(world_dir, tmp_path):
  workdir = tmp_path / "w"
  workdir.mkdir()
  os.symlink("/dev/full", workdir / "metrics.jsonl")  # every write: ENOSPC
  proc = run_cli("mmjax.train", tiny_args(workdir, world_dir), check=False)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert f"writing {workdir}/metrics.jsonl failed: OSError: [Errno 28]" in proc.stderr
  assert "The disk is full" in proc.stderr and "Training stopped" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not os.path.exists(workdir / "lock")


@pytest.mark.parametrize("case", ["variant", "file", "dataset", "inf", "mesh", "batch", "nan",
                                  "read_only", "syntax", "name_is_a_path", "tokenizer"])
def test_bad_inputs_fail_in_one_line_and_leave_no_workdir(case, world_dir, tmp_path):
  workdir = tmp_path / "w"
  (tmp_path / "broken.py").write_text("def get_config(arg):\n  return (\n")
  args = {"read_only": tiny_args("/proc/sys/mmjax_run", world_dir),  # a read-only mount
          "syntax": ["--config", str(tmp_path / "broken.py"), "--workdir", str(workdir)],
          "name_is_a_path": tiny_args(workdir, world_dir, "--config.tasks.default.data.name=../../etc"),
          "tokenizer": tiny_args(workdir, world_dir,
                                 "--config.tasks.default.data.tokenizer.kind=bogus"),
          "variant": ["--config", TINY_HUGE, "--workdir", str(workdir)],
          "file": tiny_args(tmp_path / "a_file", world_dir),
          "dataset": tiny_args(workdir, world_dir, "--config.tasks.default.data.name=mm_world/nope"),
          "inf": tiny_args(workdir, world_dir, "--config.optim.learning_rate=1e999"),
          "mesh": tiny_args(workdir, world_dir, "--config.mesh.data=3"),
          "batch": tiny_args(workdir, world_dir, "--config.tasks.default.batch_size=12"),
          "nan": tiny_args(workdir, world_dir, "--config.optim.learning_rate=1e38",
                           "--config.optim.warmup_steps=0")}[case]
  (tmp_path / "a_file").write_text("not a workdir")
  proc = run_cli("mmjax.train", args, check=False)
  expect = {"variant": "unknown variant 'huge'", "file": "is a file, not a directory",
            "dataset": "unknown dataset 'mm_world/nope'", "inf": "learning_rate=inf: must be "
            "a finite number",
            # 8: the fake CPU devices of the test run (tests/conftest.py).
            "mesh": "error: config.mesh (per slice) {'data': 3, 'fsdp': 1, 'tensor': 1, "
                    "'expert': 1}: product 3 != 8 devices",
            "batch": "batch_size=12 is not divisible",
            "nan": "no checkpoint exists yet", "read_only": "may not write in /proc/sys",
            "syntax": "is not valid Python: '(' was never closed (line 2",
            "name_is_a_path": "dataset name '../../etc' is not a dataset name",
            "tokenizer": "unknown tokenizer kind 'bogus'"}[case]
  assert proc.returncode in (1, 2) and expect in proc.stderr, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1
  if case != "nan":
    assert not os.path.exists(workdir)


TINY_HUGE = os.path.join(ROOT, "configs", "mm_world.py") + ":huge"


def test_all_steps_damaged_stops_the_run_instead_of_restarting_it(finished, world_dir, tmp_path):
  workdir = tmp_path / "w"
  shutil.copytree(finished, workdir)
  for step in committed_steps(workdir):
    victim = largest_file(workdir / "checkpoints" / str(step) / "state")
    with open(victim, "r+b") as f:
      f.seek(os.path.getsize(victim) // 2)
      f.write(b"\xa5" * 8)
  proc = run_cli("mmjax.train", tiny_args(workdir, world_dir), check=False)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert f"every checkpoint under {workdir}/checkpoints is damaged" in proc.stderr
  assert "checkpoint step 12 in" in proc.stderr and "checkpoint step 6 in" in proc.stderr
  assert "--restart_from_scratch" in proc.stderr and "Traceback" not in proc.stderr
  assert committed_steps(workdir) == [6, 12] and not os.path.exists(workdir / "lock")
  assert not os.path.exists(workdir / "checkpoints_damaged")


def test_evaluate_of_a_workdir_whose_config_is_not_json_says_so_in_one_line(finished, tmp_path):
  workdir = tmp_path / "w"
  shutil.copytree(finished, workdir)
  (workdir / "config.json").write_text("{not json")
  proc = run_cli("mmjax.evaluate", ["--workdir", str(workdir)], check=False)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert f"{workdir}/config.json is not a readable mmjax config" in proc.stderr


def test_a_metrics_row_with_an_overflowing_step_does_not_stop_a_resume(finished, world_dir,
                                                                       tmp_path):
  workdir = tmp_path / "w"
  shutil.copytree(finished, workdir)
  with open(workdir / "metrics.jsonl", "a") as f:
    f.write('{"step": 1e400}\n')
  proc = run_cli("mmjax.train", tiny_args(workdir, world_dir), check=False)
  assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert not os.path.exists(workdir / "lock")
  assert "1e400" in (workdir / "metrics.superseded.jsonl").read_text()


def catches_sigterm(pid: int) -> bool:
  with open(f"/proc/{pid}/status") as f:
    mask = next(l for l in f if l.startswith("SigCgt:")).split()[1]
  return bool(int(mask, 16) & (1 << (signal.SIGTERM - 1)))


def test_sigterm_before_the_first_step_exits_cleanly_leaving_no_lock(world_dir, tmp_path):
  workdir = tmp_path / "w"
  trainer = subprocess.Popen([sys.executable, "-m", "mmjax.train",
                              *tiny_args(workdir, world_dir)], cwd=ROOT, env=cli_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    wait_for(lambda: trainer.poll() is not None or catches_sigterm(trainer.pid), 120,
             "the trainer to handle SIGTERM", poll=0.05)
    trainer.send_signal(signal.SIGTERM)  # while it starts up (parsing, compiling)
    _, err = trainer.communicate(timeout=120)
  finally:
    trainer.kill()
  assert trainer.returncode == 0, err[-3000:]
  assert "Traceback" not in err and "SIGTERM outside the training loop" in err, err[-3000:]
  assert not os.path.exists(workdir / "lock")


def test_sigterm_after_the_last_step_abandons_the_evals_keeps_the_save_and_the_lock_goes(
    world_dir, tmp_path):
  workdir = tmp_path / "w"
  trainer = subprocess.Popen([sys.executable, "-m", "mmjax.train",
                              *tiny_args(workdir, world_dir)], cwd=ROOT, env=cli_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:  # step 12 (the last) is committed once the loop is over: then come the final evals
    wait_for(lambda: trainer.poll() is not None or os.path.isdir(workdir / "checkpoints" / "12"),
             240, "the last checkpoint", poll=0.02)
    trainer.send_signal(signal.SIGTERM)
    _, err = trainer.communicate(timeout=120)
  finally:
    trainer.kill()
  assert trainer.returncode == 0 and "Traceback" not in err, err[-3000:]
  assert not os.path.exists(workdir / "lock")
  assert "SIGTERM outside the training loop" in err, err[-3000:]
  assert 12 in committed_steps(workdir)
