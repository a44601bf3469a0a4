"""The one base class for problems a user can fix (bad config, data, checkpoint, ...).

Entry points print such an error's message and exit non-zero without a traceback; any
other exception is a bug and keeps its traceback.
"""


class MmjaxError(Exception):
  """Bad input or state; the message names what is wrong and what would be right."""


class ConfigError(MmjaxError, ValueError):
  """A recipe, override or value is invalid. The message says what would be valid."""
