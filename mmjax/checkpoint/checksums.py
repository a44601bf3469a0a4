"""Checksums of a checkpoint step, written at save time and verified before a restore.

`<step>/mmjax_checksums.process_<i>.json` holds the sha256 and size of the files process i
wrote: its own OCDBT store (`state/ocdbt.process_<i>/`, `state/array_metadatas/process_<i>`);
process 0 also owns everything else (the merged manifest, metadata, the data item). So each
process hashes only its shards and the work scales with the job. Process 0's manifest
additionally lists the name and size of every file of the step, which catches a missing or
truncated file of any process at the cost of a directory listing.

Process 0 writes its manifest inside Orbax's temporary folder, before the step is committed
(an Orbax post-finalization callback), so a committed step always has it. Other processes
add theirs just after the commit: a step whose manifest k is missing is verified except for
the contents of process k's files (whose names and sizes are still checked).
"""
from __future__ import annotations

import hashlib
import json
import os
import re

# Files, not a folder, at the step's top level: Orbax takes every folder there for an item.
MANIFEST_PREFIX = "mmjax_checksums.process_"
_OWNED = re.compile(r"(?:^|/)(?:ocdbt\.process_|array_metadatas/process_)(\d+)(?:/|$)")
_CHUNK = 1 << 22
# Files Orbax rewrites at or after the commit (step metadata with its commit time, commit
# markers): not covered by checksums; damage to them shows as a failed restore instead.
_UNHASHED = ("_CHECKPOINT_METADATA", "commit_success.txt")


def owner(relpath: str) -> int:
  m = _OWNED.search(relpath)
  return int(m.group(1)) if m else 0


def _files(step_dir: str) -> dict[str, int]:
  """{path relative to step_dir: size} of every file of the step, manifests excluded."""
  out = {}
  for root, _, names in os.walk(step_dir):
    rel_root = os.path.relpath(root, step_dir)
    for n in names:
      if (rel_root == "." and n.startswith(MANIFEST_PREFIX)) or n in _UNHASHED:
        continue
      rel = os.path.normpath(os.path.join(rel_root, n))
      out[rel] = os.path.getsize(os.path.join(root, n))
  return out


def sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      h.update(chunk)
  return h.hexdigest()


def manifest_path(step_dir: str, process_index: int) -> str:
  return os.path.join(step_dir, f"{MANIFEST_PREFIX}{process_index}.json")


def write_manifest(step_dir: str, process_index: int, process_count: int) -> None:
  """Hashes the files `process_index` wrote under `step_dir` (atomically written manifest)."""
  files = _files(step_dir)
  mine = {rel: {"size": size, "sha256": sha256(os.path.join(step_dir, rel))}
          for rel, size in sorted(files.items()) if owner(rel) == process_index}
  record = {"process_index": process_index, "process_count": process_count, "files": mine}
  if process_index == 0:
    record["all_sizes"] = dict(sorted(files.items()))
  path = manifest_path(step_dir, process_index)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(record, f)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def has_manifest(step_dir: str) -> bool:
  return any(n.startswith(MANIFEST_PREFIX) for n in os.listdir(step_dir))


def problems(step_dir: str, process_index: int = 0, process_count: int = 1) -> list[str]:
  """What is wrong with the files of a step ([] = verified). Each process of the restoring
  job hashes the manifests k with k % process_count == process_index."""
  if not os.path.isdir(step_dir):
    return [f"{step_dir} does not exist (deleted while being read?)"]
  if not has_manifest(step_dir):
    return []  # written before checksums existed: nothing to verify against
  try:
    with open(manifest_path(step_dir, 0)) as f:
      head = json.load(f)
  except (OSError, ValueError) as e:
    return [f"its checksum manifest {os.path.basename(manifest_path(step_dir, 0))} is "
            f"unreadable ({e})"]
  found, out = _files(step_dir), []
  for rel, size in head["all_sizes"].items():
    if rel not in found:
      out.append(f"{rel} is missing")
    elif found[rel] != size:
      out.append(f"{rel} has {found[rel]} bytes, {size} were written")
  for k in range(process_index, int(head["process_count"]), process_count):
    try:
      with open(manifest_path(step_dir, k)) as f:
        files = json.load(f)["files"]
    except FileNotFoundError:
      continue  # process k was stopped before it added its checksums; sizes were checked
    except (OSError, ValueError) as e:
      out.append(f"its checksum manifest {os.path.basename(manifest_path(step_dir, k))} is "
                 f"unreadable ({e})")
      continue
    for rel, want in files.items():
      path = os.path.join(step_dir, rel)
      if rel in found and found[rel] == want["size"] and sha256(path) != want["sha256"]:
        out.append(f"{rel} does not match its checksum (its contents changed after the save)")
  return out
