"""Capacity: room in a compressed weight for its live count to move.

A compressed weight built with ``capacity=c`` (a factor >= 1 of its initial
count ``nnz``) stores ``slots = min(N, ceil(c * nnz))`` entries: the first
``count`` slots are its live connections (ascending positions), the others are
dead: position ``N - 1`` (the sentinel, so that the whole array stays
non-decreasing, as the kernels need) and value 0. The forward pass multiplies
the values by the live flag (``slot < count``), so a dead slot adds nothing
and gets no gradient, and stays exactly zero through every optimizer step.
Layer-wise redistribution (`keras_rigl.redistribution`) can then move a
layer's count up to its slots. Without capacity (``None``) every slot is live
and nothing of this exists (today's storage, byte for byte).

Plain TensorFlow / numpy; nothing here knows about Keras.
"""

import math
import numbers

import numpy as np
from keras_rigl.backend import tf


def check_capacity(capacity, owner="SparseDense"):
  """None, or `capacity` as a float >= 1; a ValueError naming it otherwise.

  Example:
  >>> check_capacity(1.25), check_capacity(None)
  (1.25, None)
  >>> check_capacity(0.5)
  Traceback (most recent call last):
  ...
  ValueError: SparseDense capacity must be None (exactly the initial count of entries) or a number >= 1.0 (slots as a multiple of the initial count, e.g. capacity=1.25 for 25% headroom), got 0.5.
  """
  if capacity is None:
    return None
  ok = (isinstance(capacity, (numbers.Real, np.floating, np.integer)) and
        not isinstance(capacity, (bool, np.bool_)) and math.isfinite(float(capacity)) and
        float(capacity) >= 1.0)
  if not ok:
    raise ValueError(
        f"{owner} capacity must be None (exactly the initial count of entries) or a "
        "number >= 1.0 (slots as a multiple of the initial count, e.g. capacity=1.25 "
        f"for 25% headroom), got {capacity!r}.")
  return float(capacity)


def slot_count(nnz, size, capacity):
  """Slots of a weight with `nnz` initial entries out of `size` (None: nnz).

  Example:
  >>> slot_count(100, 1000, 1.25), slot_count(100, 110, 1.25), slot_count(7, 50, None)
  (125, 110, 7)
  """
  if capacity is None:
    return int(nnz)
  # The tolerance keeps e.g. 1.1 * 100 at 110, not 111.
  return int(min(size, max(nnz, math.ceil(capacity * nnz - 1e-9))))


def sentinel(size):
  """The position of a dead slot: the last one, so that slots stay ascending."""
  return int(size) - 1


def live_mask(count, slots):
  """bool [slots]: True at the live slots, the first `count`.

  Example:
  >>> live_mask(tf.constant(2), 4).numpy().tolist()
  [True, True, False, False]
  """
  return tf.range(slots, dtype=tf.convert_to_tensor(count).dtype) < count


def pad_numpy(positions, slots, size):
  """Ascending live `positions` followed by sentinels up to `slots` (numpy)."""
  out = np.full([slots], sentinel(size), np.int64)
  out[:len(positions)] = positions
  return out


def pad(positions, values, slots, size):
  """Live ascending `positions` / `values` padded with dead slots to `slots`.

  Example:
  >>> p, v = pad(tf.constant([1, 4]), tf.constant([0.5, 2.0]), 4, 10)
  >>> p.numpy().tolist(), v.numpy().tolist()
  ([1, 4, 9, 9], [0.5, 2.0, 0.0, 0.0])
  """
  positions = tf.convert_to_tensor(positions)
  values = tf.convert_to_tensor(values)
  extra = slots - tf.shape(positions)[0]
  positions = tf.concat([positions, tf.fill([extra], tf.cast(sentinel(size), positions.dtype))],
                        0)
  values = tf.concat([values, tf.zeros([extra], values.dtype)], 0)
  return positions, values


def dead_slots_zero(initializer, nnz):
  """`initializer` for a [slots] values variable, with 0 past the first `nnz`."""

  def init(shape, dtype=None, **kwargs):
    values = tf.convert_to_tensor(initializer(shape, dtype=dtype, **kwargs))
    return values * tf.cast(tf.range(shape[0]) < nnz, values.dtype)

  return init
