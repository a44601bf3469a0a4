"""The shape of the package: its longest function, its longest file, its top-level modules.

  python benchmarks/code_shape.py [--top N]

Prints the N longest functions and files, then, as its last line, one JSON object:
{"max_function_lines", "max_file_lines", "top_level_modules", ...}. The bars (the redesign
of 2026-12): functions <= 60 lines, files <= 400, <= 6 modules at the top of mmjax/.
tests/test_layers.py asserts them."""
from __future__ import annotations

import argparse
import ast
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "mmjax")


def python_files(package: str = PACKAGE) -> list[str]:
  return sorted(os.path.join(d, f) for d, _, files in os.walk(package)
                for f in files if f.endswith(".py"))


def function_lengths(path: str) -> list[tuple[int, str]]:
  """(lines, 'file:line name') of every function and method, decorators excluded."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  rel = os.path.relpath(path, ROOT)
  return [(node.end_lineno - node.lineno + 1, f"{rel}:{node.lineno} {node.name}")
          for node in ast.walk(tree)
          if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def shape(package: str = PACKAGE) -> dict:
  files = python_files(package)
  functions = sorted((f for p in files for f in function_lengths(p)), reverse=True)
  lengths = sorted(((sum(1 for _ in open(p)), os.path.relpath(p, ROOT)) for p in files),
                   reverse=True)
  top = sorted(f for f in os.listdir(package) if f.endswith(".py"))
  return dict(max_function_lines=functions[0][0], longest_function=functions[0][1],
              max_file_lines=lengths[0][0], longest_file=lengths[0][1],
              top_level_modules=len(top), top_level=top,
              functions_over_60=[name for n, name in functions if n > 60],
              files_over_400=[name for n, name in lengths if n > 400],
              _functions=functions, _files=lengths)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--top", type=int, default=10)
  args = parser.parse_args()
  s = shape()
  print(f"{'lines':>6}  longest functions")
  for n, name in s["_functions"][:args.top]:
    print(f"{n:>6}  {name}")
  print(f"{'lines':>6}  longest files")
  for n, name in s["_files"][:args.top]:
    print(f"{n:>6}  {name}")
  print(json.dumps({k: v for k, v in s.items() if not k.startswith("_")}))


if __name__ == "__main__":
  main()
