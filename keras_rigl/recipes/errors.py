"""The one error type of the recipes: a run that cannot start as asked."""


class SetupError(ValueError):
  """A run that cannot start as asked; the message names the setting and the fix.

  Entry points print the message and exit (no traceback); being a
  `ValueError`, it can be caught like any bad argument.

  Example:
  >>> try:
  ...   raise SetupError("--batch_size=5 does not split over 2 replicas; use 4 or 6.")
  ... except ValueError as e:
  ...   print(e)
  --batch_size=5 does not split over 2 replicas; use 4 or 6.
  """
