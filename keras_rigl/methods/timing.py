"""Timing of mask updates: when masks move, how many connections move, how sparse to prune.

Pure Python/numpy on integer steps (the callbacks call these eagerly, once per
update), in float64 so that ``floor(n * fraction)`` matches the reference.
"""

import math

import numpy as np

DROP_FRACTION_SCHEDULES = ("constant", "cosine", "exponential")


def is_update_step(step, update_freq, begin_step, end_step):
  """True when a mask update happens after optimizer step `step`."""
  return begin_step <= step <= end_step and step % update_freq == 0


def parse_drop_fraction_schedule(schedule):
  """Validates a schedule name; returns (kind, exponent).

  "exponential" decays as ``(1 - t/T) ** k``, as in the authors' code; the
  exponent k is 1 unless written "exponential_k" (e.g. "exponential_3").
  """
  if callable(schedule):
    return schedule, None
  if not isinstance(schedule, str):
    raise ValueError(f"drop_fraction_schedule must be one of {DROP_FRACTION_SCHEDULES} "
                     f"or a callable step -> fraction, got {schedule!r}.")
  if schedule.startswith("exponential"):
    rest = schedule[len("exponential"):]
    try:
      exponent = float(rest[1:]) if rest else 1.0
    except ValueError:
      exponent = None
    if exponent is None or (rest and rest[0] != "_") or exponent < 0:
      raise ValueError(f"Bad drop_fraction_schedule {schedule!r}: write 'exponential' "
                       "or 'exponential_<k>' with k >= 0, e.g. 'exponential_3'.")
    return "exponential", exponent
  if schedule not in DROP_FRACTION_SCHEDULES:
    raise ValueError(f"Unknown drop_fraction_schedule {schedule!r}; use one of "
                     f"{DROP_FRACTION_SCHEDULES} or a callable step -> fraction.")
  return schedule, None


def drop_fraction_at(step, initial, schedule, begin_step, end_step):
  """Fraction of active connections that move at `step`.

  constant: `initial`; cosine: ``initial / 2 * (1 + cos(pi * t / T))``;
  exponential(_k): ``initial * (1 - t / T) ** k``; with ``t = step -
  begin_step`` and ``T = end_step - begin_step`` (t clipped to [0, T]).

  Example:
  >>> round(drop_fraction_at(50, 0.3, "cosine", 0, 100), 6)
  0.15
  >>> drop_fraction_at(7, 0.4, lambda step: step / 100, 0, 100)
  0.07
  """
  kind, exponent = parse_drop_fraction_schedule(schedule)
  if callable(kind):
    return float(kind(step))
  if kind == "constant":
    return float(initial)
  span = max(end_step - begin_step, 1)
  progress = min(max(step - begin_step, 0), span) / span
  if kind == "cosine":
    return float(initial) * 0.5 * (1.0 + math.cos(math.pi * progress))
  return float(initial) * (1.0 - progress) ** exponent


def polynomial_sparsity(step, initial_sparsity, final_sparsity, begin_step,
                        end_step, power=3):
  """Zhu & Gupta (2017) gradual pruning: sparsity reached at `step`.

  ``s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0)) ** power``, held at s_i
  before t0 and s_f after t1.

  Example:
  >>> polynomial_sparsity(100, 0.0, 0.9, 0, 100)
  0.9
  """
  span = max(end_step - begin_step, 1)
  progress = min(max(step - begin_step, 0), span) / span
  return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** power


# More update steps than this are not tabulated (the in-step updates then
# fall back or refuse, each saying so).
MAX_TABLE = 100_000


def drop_fraction_table(scheduler, end_step):
  """(first update step, float64 fractions at every update step) or None.

  The host's own values (Python float64, callables included), so that an
  update compiled into the train step drops exactly the count the
  host-scheduled one would. None when there are more than MAX_TABLE update
  steps.

  >>> class Every10:
  ...   update_freq, begin_step = 10, 5
  ...   def current_drop_fraction(self, step):
  ...     return 0.3 if step < 30 else 0.1
  >>> first, table = drop_fraction_table(Every10(), 40)
  >>> first, table.tolist()
  (10, [0.3, 0.3, 0.1, 0.1])
  """
  freq, begin = scheduler.update_freq, scheduler.begin_step
  first = -(-begin // freq) * freq
  if first > end_step:
    return first, np.zeros([1], np.float64)
  steps = range(first, end_step + 1, freq)
  if len(steps) > MAX_TABLE:
    return None
  return first, np.array([scheduler.current_drop_fraction(s) for s in steps], np.float64)
