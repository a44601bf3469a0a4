"""One message for a run stopped by a failed write (checkpoint, metrics, config), whose advice
follows from the actual error: a full disk, a permission or read-only problem, or files that
disappeared under the writer are different causes with different fixes."""
from __future__ import annotations

import errno


def _os_error(error: BaseException) -> OSError | None:
  seen = set()
  while error is not None and id(error) not in seen:
    if isinstance(error, OSError):
      return error
    seen.add(id(error))
    error = error.__cause__ or error.__context__
  return None


def _messages(error: BaseException) -> str:
  """The messages of `error` and the errors it was raised from or during."""
  seen, out = set(), []
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    out.append(str(error))
    error = error.__cause__ or error.__context__
  return "\n".join(out)


# What the storage layers under Orbax (TensorStore, asyncio) say when they wrap an OSError
# in their own exception (e.g. ValueError: RESOURCE_EXHAUSTED: ... No space left on device).
_DISK_FULL_WORDS = ("No space left on device", "Disk quota exceeded")
_NOT_ALLOWED_WORDS = ("Read-only file system", "Permission denied", "PERMISSION_DENIED")


def advice(error: BaseException) -> str:
  os_error = _os_error(error)
  code = getattr(os_error, "errno", None)
  text = _messages(error)
  if code in (errno.ENOSPC, errno.EDQUOT) or any(w in text for w in _DISK_FULL_WORDS):
    return "The disk is full (or over quota): free space there"
  if code in (errno.EACCES, errno.EPERM, errno.EROFS) or any(w in text
                                                           for w in _NOT_ALLOWED_WORDS):
    return "This process may not write there (permissions, or a read-only filesystem): fix that"
  if code in (errno.ENOENT, errno.ENOTDIR):
    return ("A file or folder of the workdir disappeared or was replaced while it was being "
            "written (another program deleting or moving files there?): make sure only this run "
            "changes the workdir")
  return "Fix the cause"


def stopped(what: str, error: BaseException, last_checkpoint: int | None) -> str:
  """'<what> failed: <error>. Training stopped; ... <advice> and rerun the same command.'"""
  last = (f"the last finished checkpoint on disk is step {last_checkpoint}"
          if last_checkpoint is not None else "no checkpoint has been finished yet")
  return (f"{what} failed: {type(error).__name__}: {error}. Training stopped; {last}. "
          f"{advice(error)}, and rerun the same command to resume.")
