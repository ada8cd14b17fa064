"""Argument checks shared by every mask scheduler, in one place.

Each check returns the value in its canonical Python type or raises a
ValueError that names the argument, the value given and a value that works.
`owner` ("RigLScheduler: ") prefixes the message with the class at fault.

Example:
>>> check_int("update_freq", 100, 1)
100
>>> check_fraction("drop_fraction", 1.5, owner="RigLScheduler: ")
Traceback (most recent call last):
...
ValueError: RigLScheduler: drop_fraction must be a number in [0, 1], got 1.5.
"""

import numbers

import numpy as np


def check_int(name, value, minimum, owner=""):
  """An integer >= `minimum` (numpy integers accepted, bools refused).

  >>> check_int("begin_step", np.int64(3), 0)
  3
  """
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    example = minimum if isinstance(value, bool) or not isinstance(value, numbers.Real) \
        else max(minimum, int(value))
    raise ValueError(f"{owner}{name} must be an integer >= {minimum}, got {value!r}; "
                     f"pass e.g. {name}={example}.")
  return int(value)


def check_fraction(name, value, low=0.0, high=1.0, high_open=False, owner=""):
  """A real number in [low, high] (or [low, high)); numpy scalars accepted.

  >>> check_fraction("momentum", np.float32(0.5), high_open=True)
  0.5
  """
  interval = f"[{low:g}, {high:g}{')' if high_open else ']'}"
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
    raise ValueError(f"{owner}{name} must be a number in {interval}, got {value!r} "
                     f"of type {type(value).__name__}; pass a float, e.g. {name}=0.3.")
  value = float(value)
  if not (low <= value < high if high_open else low <= value <= high):
    raise ValueError(f"{owner}{name} must be a number in {interval}, got {value!r}.")
  return value


def check_seed(seed, owner=""):
  """An integer seed (numpy integers accepted, bools refused).

  >>> check_seed(7)
  7
  """
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise ValueError(f"{owner}seed must be an integer, got {seed!r}; pass e.g. seed=0.")
  return int(seed)


def check_data_not_a_number(data, owner, use):
  """Refuses a number passed positionally as `data` (meant as update_freq).

  >>> check_data_not_a_number(None, "SETScheduler", "unused by SET")
  >>> check_data_not_a_number(100, "SETScheduler", "unused by SET")
  Traceback (most recent call last):
  ...
  ValueError: SETScheduler got 100 as its first positional argument, which is `data` (unused by SET), not update_freq. Pass the numbers by keyword, e.g. SETScheduler(update_freq=100).
  """
  if isinstance(data, (numbers.Number, np.generic)):
    raise ValueError(
        f"{owner} got {data!r} as its first positional argument, which is `data` "
        f"({use}), not update_freq. Pass the numbers by keyword, e.g. "
        f"{owner}(update_freq={data!r}).")
