"""The one exception type that entry points turn into a one-line message."""


class UsageError(Exception):
  """Bad input from the user: the message names the problem and the fix.

  Entry points print it on one line and exit non-zero, without a traceback;
  anything else that goes wrong is a bug and keeps its traceback.
  """
