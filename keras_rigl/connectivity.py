"""Fan-in of output units: how many active connections feed each unit.

At high sparsity, gradient-based growth can cut a unit off for good: a ReLU
unit whose every input connection was dropped receives zero gradient, so RigL
never grows an input back to it (the unit is ablated). `sparsity_report`
shows, per weight, the units without inputs and the largest fan-in, from
these functions. Pure numpy.
"""

import numpy as np


def fan_in_of_mask(mask):
  """Active inputs of each output unit of a 0/1 mask (last axis = outputs).

  Example:
  >>> fan_in_of_mask(np.array([[1, 0, 0], [1, 1, 0]])).tolist()
  [2, 1, 0]
  """
  mask = np.asarray(mask)
  if mask.ndim < 2:
    return np.asarray(mask != 0, np.int64)
  return np.count_nonzero(mask.reshape(-1, mask.shape[-1]), axis=0)


def fan_in_of_positions(positions, n_out):
  """Fan-in from flat row-major positions ``i * n_out + j`` of the active entries.

  Example:
  >>> fan_in_of_positions(np.array([0, 3, 4]), 3).tolist()
  [2, 1, 0]
  """
  return np.bincount(np.asarray(positions, np.int64) % n_out, minlength=n_out)


def unit_stats(fan_in):
  """(units without any input, largest fan-in) of a fan-in vector.

  Example:
  >>> unit_stats(np.array([2, 1, 0]))
  (1, 2)
  """
  fan_in = np.asarray(fan_in)
  if fan_in.size == 0:
    return 0, 0
  return int(np.sum(fan_in == 0)), int(fan_in.max())
