"""python -m mmjax.scaling {sweep,collect,fit,compare,plot,report} ...

  sweep   --sweep FILE --out DIR [--launcher local|slurm|print] [--parallel K] [--dry-run]
          [--sbatch-args "..."]     runs (or submits, or prints) every unfinished run
  collect --out DIR [--objective caption_mlm]   -> DIR/results.csv and DIR/failed.csv
  fit     --results CSV --out DIR [--group-by fusion] [--params-column active_params]
          [--bootstrap B]           prints one JSON object; writes DIR/fit.json
  compare --fit DIR --budgets 1e12,1e14,1e16   which family is better at each budget, with
                                    intervals from the fit's bootstrap: one JSON object
  plot    --results CSV --fit DIR --out DIR      -> PNGs
  report  --out DIR [--results CSV] [--fit DIR] [--budgets ...]   -> DIR/report.md, one page
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from mmjax.errors import MmjaxError


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m mmjax.scaling", description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest="command", required=True)
  s = sub.add_parser("sweep", help="run, submit or print the unfinished runs of a sweep file")
  s.add_argument("--sweep", required=True, help="configs/sweeps/<name>.py")
  s.add_argument("--out", required=True, help="output folder: one workdir per run")
  s.add_argument("--launcher", choices=("local", "slurm", "print"), default="local")
  s.add_argument("--parallel", type=int, default=1, help="local: runs at a time")
  s.add_argument("--dry-run", action="store_true", help="validate and say what would run")
  s.add_argument("--sbatch-args", default="", help="slurm: extra sbatch options, one string")
  c = sub.add_parser("collect", help="results.csv (+ failed.csv) from a sweep's output folder")
  c.add_argument("--out", required=True)
  c.add_argument("--objective", default=None,
                 help="objective whose final eval loss is `loss` (default caption_mlm), or an "
                      "exact metric name such as default/loss/caption_mlm/loss")
  f = sub.add_parser("fit", help="fit L(N, D) = E + A/N^alpha + B/D^beta")
  f.add_argument("--results", required=True, help="CSV with params, tokens and loss columns")
  f.add_argument("--out", required=True)
  f.add_argument("--group-by", default=None, help="fit each value of this column apart")
  f.add_argument("--params-column", default="params")
  f.add_argument("--bootstrap", type=int, default=0, help="resamples for 95%% intervals")
  f.add_argument("--flops-column", default="flops",
                 help="compute axis of the frontier and gamma: flops (the trainer's count), "
                      "flops_nmm (NMM's convention) or flops_6nd")
  k = sub.add_parser("compare", help="families' frontiers compared at compute budgets")
  k.add_argument("--fit", required=True, help="the --out of `fit --group-by family --bootstrap B`")
  k.add_argument("--budgets", required=True, help="comma-separated FLOPs, e.g. 1e12,1e14,1e16")
  r = sub.add_parser("report", help="DIR/report.md: fit table, verdicts, figures, commands")
  r.add_argument("--out", required=True, help="where report.md goes (a sweep's --out)")
  r.add_argument("--results", default=None, help="default: DIR/results.csv")
  r.add_argument("--fit", default=None, help="default: DIR/fit (a grouped, bootstrapped fit)")
  r.add_argument("--budgets", default=None, help="default: the runs' smallest, middle and "
                                                  "largest compute")
  g = sub.add_parser("plot", help="PNG plots of results and fit")
  g.add_argument("--results", required=True)
  g.add_argument("--fit", required=True, help="the --out of the fit command")
  g.add_argument("--out", required=True)
  return p


def sweep(args) -> int:
  from mmjax.scaling import runner, sweep as sweep_lib
  if args.parallel < 1:
    raise sweep_lib.SweepError(f"--parallel {args.parallel}: need at least 1")
  runs = sweep_lib.load_sweep(args.sweep)
  configs = sweep_lib.validate(runs)  # all of them, before anything runs
  out = os.path.abspath(args.out)
  states = {r.name: runner.status(os.path.join(out, r.name), configs[r.name]) for r in runs}
  todo = [r for r in runs if states[r.name] != "finished"]
  print(f"{len(runs)} runs: {len(runs) - len(todo)} finished, "
        f"{sum(s == 'unfinished' for s in states.values())} unfinished, "
        f"{sum(s == 'missing' for s in states.values())} missing", file=sys.stderr)
  if args.dry_run:
    from mmjax.scaling import cost
    for line in cost.cost_lines([r.name for r in todo], configs):
      print(line, file=sys.stderr)
  if args.launcher == "print" or (args.dry_run and args.launcher == "local"):
    for r in todo:
      print(shlex.join(runner.train_command(r, os.path.join(out, r.name), python="python")))
    return 0
  if args.launcher == "slurm" and args.dry_run:
    if todo:
      print(shlex.join(runner.slurm_submission(out, todo, shlex.split(args.sbatch_args))))
    return 0
  if not todo:
    return 0
  os.makedirs(out, exist_ok=True)
  runner.write_plan(out, runs)
  runner.prepare_data(configs)
  if args.launcher == "slurm":
    job = runner.submit_slurm(out, todo, shlex.split(args.sbatch_args))
    print(f"submitted job array {job} ({len(todo)} runs); when it is done: "
          f"python -m mmjax.scaling collect --out {args.out}", file=sys.stderr)
    print(job)
    return 0
  # Longest first: the last runs to start are then short ones, which keeps K workers busy.
  todo.sort(key=lambda r: runner.estimated_cost(configs[r.name]), reverse=True)
  return runner.run_local(out, todo, configs, args.parallel)


def collect(args) -> int:
  from mmjax.scaling import collect as collect_lib
  results, failed = collect_lib.collect(args.out, args.objective or collect_lib.DEFAULT_OBJECTIVE)
  print(f"{len(results)} runs -> {os.path.join(args.out, 'results.csv')}; {len(failed)} not "
        f"collected -> {os.path.join(args.out, 'failed.csv')}", file=sys.stderr)
  return 0


def fit(args) -> int:
  from mmjax.checkpoint import workdir as workdir_lib
  from mmjax.scaling import fit as fit_lib, frontier
  rows = fit_lib.read_rows(args.results)
  if args.group_by:
    if rows and args.group_by not in rows[0]:
      raise fit_lib.FitError(f"{args.results}: missing column {args.group_by!r} (--group-by); "
                             f"columns are {list(rows[0])}")
    groups = {}
    for r in rows:
      groups.setdefault(r[args.group_by], []).append(r)
  else:
    groups = {None: rows}
  if rows and args.flops_column != "flops" and args.flops_column not in rows[0]:
    raise fit_lib.FitError(f"{args.results}: missing column {args.flops_column!r} "
                           f"(--flops-column); columns are {list(rows[0])}")
  fits = {}
  for name, group_rows in sorted(groups.items(), key=lambda kv: str(kv[0])):
    where = args.results if name is None else f"{args.results} ({args.group_by}={name})"
    pts = fit_lib.points_from_rows(group_rows, args.params_column, source=where,
                                   flops_column=args.flops_column)
    result = fit_lib.fit_all(pts, bootstrap_resamples=args.bootstrap)
    frontier.annotate(result, pts)
    result.update(params_column=args.params_column, group_by=args.group_by,
                  flops_column=args.flops_column)
    fits[name] = result
  out = fit_lib.json_safe(fits[None] if args.group_by is None else fits)
  os.makedirs(args.out, exist_ok=True)
  workdir_lib.write_json(os.path.join(args.out, "fit.json"), out)
  if args.group_by:
    table = fit_table(out)
    with open(os.path.join(args.out, "fit_table.txt"), "w") as fh:
      fh.write(table + "\n")
    print(table, file=sys.stderr)  # stdout stays one JSON object
  print(json.dumps(out, sort_keys=True))
  return 0


def fit_table(fits: dict) -> str:
  keys = ("E", "A", "B", "alpha", "beta", "n_opt_exponent", "d_opt_exponent", "gamma",
          "r2_log_loss", "huber", "num_points")
  names = [str(n) for n in fits]
  w = max(12, *(len(n) + 2 for n in names))
  lines = [f"{'':<16}" + "".join(f"{n:>{w}}" for n in names)]
  for k in keys:
    lines.append(f"{k:<16}" + "".join(f"{_num(fits[n].get(k)):>{w}.4g}" for n in fits))
  return "\n".join(lines)


def _num(v) -> float:
  return float("nan") if v is None else float(v)


def compare(args) -> int:
  from mmjax.scaling import compare as compare_lib, fit as fit_lib
  budgets = compare_lib.parse_budgets(args.budgets)
  fits = compare_lib.load_fits(args.fit)
  for w in compare_lib.extrapolation_warnings(fits, budgets):
    print(f"warning: {w}", file=sys.stderr)
  print(json.dumps(fit_lib.json_safe(compare_lib.compare(fits, budgets)), sort_keys=True))
  return 0


def report(args) -> int:
  from mmjax.scaling import compare as compare_lib, fit as fit_lib, report as report_lib
  results = args.results or os.path.join(args.out, "results.csv")
  fit_dir = args.fit or os.path.join(args.out, "fit")
  budgets = compare_lib.parse_budgets(args.budgets) if args.budgets else None
  rows = fit_lib.read_rows(results)
  print(report_lib.write_report(args.out, rows, results, fit_dir, budgets))
  return 0


def plot(args) -> int:
  from mmjax.scaling import fit as fit_lib, plot as plot_lib
  path = os.path.join(args.fit, "fit.json")
  if not os.path.isfile(path):
    raise fit_lib.FitError(f"--fit {args.fit!r} has no fit.json; run the fit command with "
                           f"--out {args.fit} first")
  with open(path) as fh:
    fits = json.load(fh)
  rows = fit_lib.read_rows(args.results)
  first = next(iter(fits.values())) if "E" not in fits else fits
  fit_lib.points_from_rows(rows, first.get("params_column", "params"), source=args.results)
  for p in plot_lib.plot(rows, fits, args.out):
    print(p)
  return 0


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  if args.command != "sweep" and "numpy" not in sys.modules:
    # The fits' L-BFGS on 5 parameters is 3-8x slower when OpenBLAS spins up threads on a
    # busy machine; one thread is always enough here. Read by OpenBLAS when numpy loads.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
  try:
    commands = {"sweep": sweep, "collect": collect, "fit": fit, "compare": compare,
                "plot": plot, "report": report}
    return commands[args.command](args)
  except MmjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except BrokenPipeError:
    # The reader went away (`... | head`): nothing is wrong with the work, so no traceback.
    # stdout is pointed at devnull so the interpreter's final flush cannot raise again.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1


if __name__ == "__main__":
  sys.exit(main())
