"""Runs every benchmark one after another and writes docs/benchmarks.md from what they print.

  python benchmarks/run_all.py                  # every benchmark at its recorded size
  python benchmarks/run_all.py --quick          # toy sizes: proves the pipeline, not the figures
  python benchmarks/run_all.py --only moe,agd   # some of them (the others' sections are kept)
  python benchmarks/run_all.py --gpu            # the accelerator subset (bf16, larger shapes)

Each benchmark prints a table and, as its last line, one JSON object of its figures. For
each run this records the command, the commit (and whether the tree had uncommitted
changes), the date, the machine (cores, device kind and count) and the 1-minute load
average just before and just after, and keeps them beside the figures in
docs/benchmarks.json; docs/benchmarks.md is rendered from that file, so a partial rerun
(--only) replaces only its own sections. Bars are judged on the bootstrap interval's far
end (benchmarks/ratios.py): "met" or "not shown".

Timings mean little while other work runs: it refuses to start while another mmjax
training, evaluation, sweep or benchmark process is running (--allow-busy runs anyway and
records those processes and the load on the page).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ratios import verdict  # noqa: E402

EIGHT_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}


@dataclasses.dataclass(frozen=True)
class Bar:
  figure: str      # a key of the benchmark's JSON holding a [low, high] interval
  bar: float
  better: str      # "lower": the bar is an upper limit; "higher": a lower limit
  what: str


@dataclasses.dataclass(frozen=True)
class Benchmark:
  name: str
  what: str
  args: tuple[str, ...]                 # the recorded size
  quick: tuple[str, ...]                # toy size (--quick)
  gpu: tuple[str, ...] | None = None    # the accelerator subset (--gpu); None: not in it
  env: tuple[tuple[str, str], ...] = ()
  bars: tuple[Bar, ...] = ()
  script: str = ""                      # benchmarks/<script>.py; default: the name

  def command(self, mode: str) -> list[str]:
    args = {"full": self.args, "quick": self.quick, "gpu": self.gpu}[mode]
    return ["python", f"benchmarks/{self.script or self.name}.py", *args]


BENCHMARKS = (
    Benchmark("mfu", "dense train step: analytic FLOP/s over the matmul FLOP/s measured in the "
              "same process", (), ("--width", "128", "--depth", "2", "--batch", "4",
                                   "--steps", "2", "--matmul", "512"),
              gpu=("--dtype", "bfloat16", "--width", "2048", "--depth", "16", "--batch", "16",
                   "--tokens", "1024")),
    Benchmark("mfu_agreement", "the trainer's logged perf/mfu over the benchmark's MFU, 1 and "
              "8 fake devices", (), ("--width", "128", "--depth", "2", "--batch", "8",
                                     "--steps", "6", "--bench_steps", "2"),
              bars=(Bar("ratio_ci95", 0.85, "higher",
                        "trainer within 15% of the benchmark (low end)"),
                    Bar("ratio_ci95", 1.15, "lower",
                        "trainer within 15% of the benchmark (high end)"))),
    Benchmark("trainer_overhead", "full trainer loop over a bare loop of the same compiled "
              "step (steps/s)", ("--steps", "600", "--rounds", "5"),
              ("--steps", "30", "--rounds", "5"),
              bars=(Bar("ratio_ci95", 0.9, "higher", "trainer >= 0.9x the bare loop"),)),
    Benchmark("input", "the default recipe's train iterator against the compiled step's "
              "consumption", ("--repeats", "5", "--batches", "15", "--steps", "10"),
              ("--config", "configs/mm_world.py:tiny", "--repeats", "5", "--batches", "3",
               "--steps", "2"),
              gpu=("--repeats", "5", "--batches", "15", "--steps", "20"),
              bars=(Bar("ratio_ci95", 1.0, "higher", "input keeps up with the step"),)),
    Benchmark("moe", "MoE train step over a dense one of equal active FLOPs",
              ("--rounds", "5", "--steps_per_round", "10"),
              ("--width", "64", "--depth", "1", "--batch", "4", "--rounds", "5",
               "--steps_per_round", "2", "--kernels", "blocked"),
              gpu=("--dtype", "bfloat16", "--width", "1024", "--depth", "8", "--batch", "32",
                   "--tokens", "1024", "--rounds", "5", "--steps_per_round", "10"),
              bars=(Bar("ratio_ci95", 1.3, "lower", "dropless <= 1.3x dense"),)),
    Benchmark("decode", "cached decoding over recomputing the sequence at every step (captions "
              "of 48 tokens, the default NMM model's size)",
              ("--rounds", "7", "--reps", "2"),
              ("--width", "32", "--depth", "1", "--num_heads", "2", "--mlp_dim", "64",
               "--batch", "2", "--rounds", "5", "--reps", "1"),
              gpu=("--dtype", "bfloat16", "--batch", "64", "--rounds", "5", "--reps", "3"),
              bars=(Bar("cache_speedup_ci95", 5.0, "higher", "cache_speedup >= 5"),)),
    Benchmark("moe_dispatch", "one MoE layer on (data=2, expert=4): dispatch implementations",
              ("--rounds", "10"), ("--width", "64", "--tokens", "64", "--batch", "8",
                                    "--rounds", "5"), env=tuple(EIGHT_DEVICES.items())),
    Benchmark("agd", "AGD stretches over the same tasks alone, in one trainer run",
              ("--batch", "32", "--segment", "20", "--cycles", "12"),
              ("--batch", "8", "--segment", "2", "--cycles", "6"),
              bars=(Bar("ratio_ci95", 1.03, "lower", "AGD overhead <= 3%"),)),
    Benchmark("agd_real_input", "the same with every task fed by its real input pipeline",
              ("--batch", "32", "--segment", "20", "--cycles", "12", "--real_input"),
              ("--batch", "8", "--segment", "2", "--cycles", "6", "--real_input"),
              bars=(Bar("ratio_ci95", 1.03, "lower", "AGD overhead <= 3%"),), script="agd"),
    Benchmark("agd_quality", "each AGD task's validation loss against the task trained alone",
              (), ("--steps", "14", "--width", "32", "--depth", "1", "--heads", "1",
                   "--batch", "8", "--warmup", "2", "--eval_batch", "32", "--tasks",
                   "t2i_32,a2t", "--alone", "a2t")),
    Benchmark("fusion", "early / bottleneck / late: FLOPs and step time", ("--steps", "4"),
              ("--width", "64", "--depth", "1", "--batch", "4", "--steps", "2")),
    Benchmark("deq", "DEQ fusion vs stacked layers of equal parameters: iterations, step time",
              ("--rounds", "7"), ("--width", "32", "--depth", "1", "--batch", "4",
                                  "--rounds", "5", "--max_iterations", "8"),
              bars=(Bar("deq_over_stacked_step_time_ci95", 3.0, "lower",
                        "DEQ step time <= 3x stacked"),)),
    Benchmark("packing_fill", "how full packed rows are (text positions holding a token, "
              "examples per row) against the same examples unpacked; data only",
              ("--config", "configs/mm_world_nmm.py:tiny_early_packed"),
              ("--config", "configs/mm_world_nmm.py:tiny_early_packed", "--batches", "4")),
    Benchmark("workdir_safety", "kill -9 and resume: bit-identical; evaluate during training",
              ("--kills", "5", "--evals", "5"), ("--kills", "1", "--evals", "1")),
    Benchmark("fit_recovery", "the scaling-law fitter on synthetic points of a known law",
              ("--seeds", "10"), ("--seeds", "2")),
    Benchmark("sharding", "per-device bytes of params + AdamW state by fsdp size", (), (),
              env=tuple(EIGHT_DEVICES.items())),
    Benchmark("code_shape", "the longest function and file in mmjax/ and its top-level modules "
              "(bars: <= 60 lines, <= 400 lines, <= 6; tests/test_layers.py holds them)", (), ()),
)
BY_NAME = {b.name: b for b in BENCHMARKS}

BUSY_MARKERS = ("-m mmjax.train", "-m mmjax.evaluate", "-m mmjax.scaling", "benchmarks/")


def other_mmjax_processes() -> list[str]:
  """Command lines of other running mmjax trainings, evaluations, sweeps and benchmarks."""
  mine = {os.getpid(), os.getppid()}
  found = []
  for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) in mine:
      continue
    try:
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
      continue
    if "python" in cmd and any(m in cmd for m in BUSY_MARKERS) and "run_all.py" not in cmd:
      found.append(f"{pid}: {cmd[:160]}")
  return found


def git(*args: str) -> str:
  return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=30).stdout.strip()


def machine(env: dict) -> dict:
  probe = ("import jax, json; d = jax.devices(); print(json.dumps(dict(platform=d[0].platform, "
           "device_kind=d[0].device_kind, devices=len(d))))")
  out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
  info = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {}
  return {"cores": os.cpu_count(), **info}


def run_one(b: Benchmark, mode: str, timeout_s: float, env: dict) -> dict:
  cmd = b.command(mode)
  env = {**env, **dict(b.env)}
  shown = " ".join(f"{k}={v}" for k, v in b.env) + (" " if b.env else "") + shlex.join(cmd)
  print(f"run_all: {b.name}: {shown}", flush=True)
  record = {"name": b.name, "mode": mode, "command": shown, "commit": git("rev-parse", "HEAD"),
            "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_1m_before": round(os.getloadavg()[0], 2)}
  t0 = time.perf_counter()
  # Its own session, so a timeout ends the benchmark's child processes too.
  proc = subprocess.Popen([sys.executable, *cmd[1:]], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
  try:
    out, err = proc.communicate(timeout=timeout_s)
    rc = proc.returncode
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate()
    rc, err = "timeout", f"timed out after {timeout_s:.0f} s"
  except BaseException:  # Ctrl-C or SIGTERM: end the benchmark too, then stop
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    raise
  record.update(wall_s=round(time.perf_counter() - t0, 1),
                load_1m_after=round(os.getloadavg()[0], 2), exit=rc)
  lines = out.strip().splitlines()
  try:
    record["figures"] = json.loads(lines[-1]) if rc == 0 and lines else None
  except json.JSONDecodeError:
    record["figures"] = None
  if record["figures"] is None:
    record["error"] = (err or out).strip().splitlines()[-1][:300] if (err or out).strip() else (
        f"exit {rc}, no output")
    print(f"run_all: {b.name} failed: {record['error']}", flush=True)
  record["bars"] = [dict(dataclasses.asdict(bar), interval=record["figures"].get(bar.figure),
                         verdict=verdict(record["figures"][bar.figure], bar.bar, bar.better))
                    for bar in b.bars if record["figures"] and bar.figure in record["figures"]]
  return record


def fmt(v) -> str:
  if isinstance(v, float):
    return f"{v:.4g}"
  if isinstance(v, list) and all(isinstance(x, (int, float)) for x in v):
    return "[" + ", ".join(fmt(x) for x in v) + "]"
  return str(v)


MODE_NOTE = {
    "quick": "**quick mode: toy sizes that prove the benchmark and this page's generator run; "
             "these are not measurements of the recipes**",
    "full": "full size (the recorded command)",
    "gpu": "accelerator subset",
}


def render(record: dict) -> str:
  results = record["results"]
  out = ["# Benchmarks", "",
         "Written by `python benchmarks/run_all.py` from `docs/benchmarks.json` (do not edit by "
         "hand; rerun it). Each section is one run of one benchmark: its command (from the "
         "repository root), the commit and date, the machine, and the 1-minute load average "
         "just before and after. Ratios are medians over rounds timed in a freshly shuffled "
         "order, with a bootstrap 95% interval (`benchmarks/ratios.py`); a bar is **met** only "
         "when the interval's far end meets it, otherwise **not shown**. Figures of earlier "
         "commits, kept for their provenance: [benchmark_history.md](benchmark_history.md).",
         ""]
  for name in [b.name for b in BENCHMARKS] + sorted(set(results) - set(BY_NAME)):
    r = results.get(name)
    if r is None:
      continue
    m = r.get("machine", {})
    out += [f"## {name}", "", BY_NAME[name].what + "." if name in BY_NAME else "", "",
            f"- mode: {MODE_NOTE.get(r['mode'], r['mode'])}",
            f"- command: `{r['command']}`",
            f"- commit: `{r['commit'][:12]}`" + (" with uncommitted changes"
                                                  if r.get("uncommitted_changes") else ""),
            f"- date: {r['date']}; wall {r['wall_s']} s; exit {r['exit']}",
            f"- machine: {m.get('cores')} cores, {m.get('devices')} × {m.get('device_kind')} "
            f"({m.get('platform')})",
            f"- 1-minute load average: {r['load_1m_before']} before, {r['load_1m_after']} after"]
    if r.get("busy"):
      out.append(f"- other mmjax processes were running (`--allow-busy`): {len(r['busy'])}")
    out.append("")
    if r.get("bars"):
      out += ["| bar | interval | verdict |", "|---|---|---|"]
      out += [f"| {b['what']} | {fmt(b['interval'])} | **{b['verdict']}** |" for b in r["bars"]]
      out.append("")
    if r.get("figures"):
      out += ["| figure | value |", "|---|---|"]
      out += [f"| `{k}` | {fmt(v)} |" for k, v in r["figures"].items()]
    else:
      out.append(f"No figures: {r.get('error', 'failed')}.")
    out.append("")
  return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  mode = p.add_mutually_exclusive_group()
  mode.add_argument("--quick", action="store_true", help="toy sizes (labelled on the page)")
  mode.add_argument("--gpu", action="store_true", help="the accelerator subset")
  p.add_argument("--only", default="", help="comma list of benchmark names")
  p.add_argument("--allow-busy", action="store_true",
                 help="run although other mmjax processes are running (recorded on the page)")
  p.add_argument("--timeout", type=float, default=3600, help="seconds per benchmark")
  p.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
  p.add_argument("--list", action="store_true", help="print the benchmarks and exit")
  a = p.parse_args(argv)
  mode = "quick" if a.quick else "gpu" if a.gpu else "full"
  chosen = [b for b in BENCHMARKS if mode != "gpu" or b.gpu is not None]
  if a.only:
    names = [n.strip() for n in a.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
      print(f"error: unknown benchmark(s) {', '.join(unknown)}; choose from "
            f"{', '.join(BY_NAME)}", file=sys.stderr)
      return 2
    chosen = [b for b in chosen if b.name in names]
    if not chosen:
      print(f"error: none of {a.only} is in the {mode} subset", file=sys.stderr)
      return 2
  if a.list:
    for b in chosen:
      print(f"{b.name:<18}{shlex.join(b.command(mode))}")
    return 0
  signal.signal(signal.SIGTERM, lambda *_: sys.exit("run_all: SIGTERM, stopping"))
  busy = other_mmjax_processes()
  if busy and not a.allow_busy:
    print("error: other mmjax processes are running; their load would be in every figure "
          "(wait, or pass --allow-busy to run anyway and record them):\n  " + "\n  ".join(busy),
          file=sys.stderr)
    return 3
  if busy:
    print(f"run_all: warning: {len(busy)} other mmjax process(es) running; recorded on the page",
          file=sys.stderr)
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.pop("XLA_FLAGS", None)  # each benchmark's own devices, not the caller's
  if mode == "quick":  # toy sizes: compile time would dominate, and no figure is kept
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".cache", "jax_compilation"))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  info = machine(env)
  store = os.path.splitext(a.out)[0] + ".json"
  record = json.load(open(store)) if os.path.exists(store) else {"results": {}}
  failed = 0
  for b in chosen:
    r = run_one(b, mode, a.timeout, env)
    r["machine"] = info
    if busy:
      r["busy"] = busy
    record["results"][b.name] = r
    failed += r.get("figures") is None
    with open(store, "w") as f:  # after each benchmark: a crash keeps what was measured
      json.dump(record, f, indent=1)
    with open(a.out, "w") as f:
      f.write(render(record))
  print(f"run_all: {len(chosen) - failed}/{len(chosen)} benchmarks gave figures; wrote {a.out}")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
