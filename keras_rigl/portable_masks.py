"""The drop/grow rules of `keras_rigl.masks`, written once in ``keras.ops``.

`keras_rigl.masks` is the TensorFlow implementation (graph mode, static
shapes for TPUs, tf_keras). This module is the same rule for every Keras 3
backend: the schedulers use it on JAX and PyTorch. Given the same mask,
weights, scores and drop fraction it selects the same connections as
`keras_rigl.masks` (tests/backends/test_identical_masks.py compares them):

- counts: ``n_drop = int32(float32(n_active) * float32(drop_fraction))``,
  `prune_mask` keeps ``N - floor(sparsity * N)`` (float64);
- NaN scores rank lowest, +-Inf like the largest finite values;
- ties: the drop takes the higher flat index, the growth the lower one;
  ``-0.0`` and ``+0.0`` are equal.

The selection is exact and O(N), with static shapes and no sort: a radix
select over integer keys that order like the float32 scores (four passes of
a 256-bucket histogram, one byte each, find the count-th largest key); all
larger keys are taken, and among keys equal to it the lowest indices.
No host round trip: every count may be a tensor.

Example:
>>> import numpy as np
>>> mask = np.array([1., 1., 0., 0.], "float32")
>>> w = np.array([0.1, 2.0, 0., 0.], "float32")
>>> g = np.array([0., 0., 5., 1.], "float32")
>>> new_mask, grown = update_mask(mask, w, g, 0.5)
>>> keras.ops.convert_to_numpy(new_mask).tolist()
[0.0, 1.0, 1.0, 0.0]
"""

import math

import numpy as np  # pylint: disable=unused-import (the examples use it)

from keras_rigl._keras import keras

# Keras 3 only (tf_keras has no keras.ops and uses keras_rigl.masks).
ops = getattr(keras, "ops", None)

_FLOAT32_MAX = 3.4028234663852886e38


def order_keys(values):
  """int32 keys that order like float32 `values` (``-0.0`` as ``+0.0``).

  Example:
  >>> keys = order_keys(np.array([-2., -0., 0., 1.5, -np.inf], "float32"))
  >>> keras.ops.convert_to_numpy(keys).argsort(kind="stable").tolist()
  [4, 0, 1, 2, 3]
  """
  values = ops.cast(values, "float32")
  values = ops.where(ops.equal(values, 0.0), ops.zeros_like(values), values)
  bits = ops.view(values, "int32")
  flip = ops.convert_to_tensor(0x7FFFFFFF, "int32")
  return ops.where(ops.less(bits, 0), ops.bitwise_xor(bits, flip), bits)


def top_mask(scores, eligible, count):
  """Boolean [N]: the `count` `eligible` entries with the largest `scores`.

  Ties go to the lower index (as ``tf.math.top_k``). `count` (int or int32
  scalar tensor) must be at most the number of eligible entries.

  Example:
  >>> s = np.array([3., 1., 3., 2.], "float32")
  >>> keras.ops.convert_to_numpy(top_mask(s, np.ones(4, bool), 1)).tolist()
  [True, False, False, False]
  """
  keys = order_keys(scores)
  candidates = ops.convert_to_tensor(eligible, "bool")
  chosen = ops.zeros_like(candidates)
  remaining = ops.cast(count, "int32")
  byte = ops.convert_to_tensor(255, "int32")
  for shift in (24, 16, 8, 0):
    digit = ops.right_shift(keys, ops.convert_to_tensor(shift, "int32"))
    if shift == 24:
      digit = digit + 128  # The signed top byte, -128..127, as a bucket.
    else:
      digit = ops.bitwise_and(digit, byte)
    histogram = ops.segment_sum(ops.cast(candidates, "int32"), digit,
                                num_segments=256)
    at_or_above = ops.flip(ops.cumsum(ops.flip(histogram, 0)), 0)
    # The highest digit whose entries and those above reach `remaining`.
    boundary = ops.maximum(
        ops.sum(ops.cast(ops.greater_equal(at_or_above, remaining), "int32")) - 1, 0)
    above = ops.take(at_or_above, boundary) - ops.take(histogram, boundary)
    chosen = ops.logical_or(chosen, ops.logical_and(candidates,
                                                     ops.greater(digit, boundary)))
    candidates = ops.logical_and(candidates, ops.equal(digit, boundary))
    remaining = remaining - above
  # Entries whose key equals the count-th largest: the lowest indices.
  rank = ops.cumsum(ops.cast(candidates, "int32"))
  return ops.logical_or(chosen, ops.logical_and(candidates,
                                                ops.less_equal(rank, remaining)))


def drop_count(n_active, drop_fraction):
  """``int32(float32(n_active) * float32(drop_fraction))``, clipped to [0, n_active].

  As `keras_rigl.masks.drop_count` (the authors' rounding).

  Example:
  >>> int(drop_count(90, 0.7))
  63
  """
  n_active = ops.cast(n_active, "int32")
  fraction = ops.cast(ops.convert_to_tensor(drop_fraction), "float32")
  n_drop = ops.cast(ops.multiply(ops.cast(n_active, "float32"), fraction), "int32")
  return ops.clip(n_drop, 0, n_active)


def finite_scores(scores):
  """Float32 scores with NaN -> lowest finite value, +-Inf -> +-largest finite.

  Example:
  >>> keras.ops.convert_to_numpy(finite_scores(np.array([1., np.nan], "float32"))).tolist()
  [1.0, -3.4028234663852886e+38]
  """
  scores = ops.cast(scores, "float32")
  scores = ops.where(ops.isnan(scores), ops.full_like(scores, -_FLOAT32_MAX), scores)
  return ops.clip(scores, -_FLOAT32_MAX, _FLOAT32_MAX)


def _drop_positions(drop_scores, active, count):
  """Boolean [N]: the `count` active entries of smallest drop score.

  Ties: the higher flat index is dropped (`keras_rigl.masks._drop_positions`).
  """
  picked = top_mask(ops.flip(ops.negative(finite_scores(drop_scores)), 0),
                    ops.flip(active, 0), count)
  return ops.flip(picked, 0)


def _flat(value):
  return ops.reshape(ops.cast(ops.convert_to_tensor(value), "float32"), [-1])


def _flat_scores(active, weights, grow_scores, drop_scores):
  """Flat finite grow scores and drop scores (default ``|W * M|``)."""
  weights = _flat(weights)
  if drop_scores is None:
    drop_scores = ops.abs(ops.where(active, weights, ops.zeros_like(weights)))
  return finite_scores(_flat(grow_scores)), _flat(drop_scores)


def update_mask(mask, weights, grow_scores, drop_fraction, drop_scores=None):
  """One RigL drop/grow step on one mask: `keras_rigl.masks.update_mask`'s rule.

  Drops the ``drop_count(n_active, drop_fraction)`` active connections of
  smallest drop score (default ``|weights * mask|``) and grows as many of
  largest grow score among the positions not kept. Returns ``(new_mask,
  grown)`` (new_mask in mask's dtype, grown boolean), shaped like `mask`.
  """
  mask = ops.convert_to_tensor(mask)
  shape = ops.shape(mask)
  active = ops.greater(ops.reshape(mask, [-1]), 0)
  grow_scores, drop_scores = _flat_scores(active, weights, grow_scores, drop_scores)
  n_active = ops.sum(ops.cast(active, "int32"))
  n_drop = drop_count(n_active, drop_fraction)
  dropped = _drop_positions(drop_scores, active, n_drop)
  kept = ops.logical_and(active, ops.logical_not(dropped))
  grown_positions = top_mask(grow_scores, ops.logical_not(kept), n_drop)
  new_active = ops.logical_or(kept, grown_positions)
  grown = ops.logical_and(new_active, ops.logical_not(active))
  return (ops.reshape(ops.cast(new_active, mask.dtype), shape),
          ops.reshape(grown, shape))


def prune_mask(mask, weights, sparsity):
  """Magnitude pruning: `keras_rigl.masks.prune_mask`'s rule (`sparsity` a float).

  Keeps the ``N - floor(sparsity * N)`` active entries of largest ``|W|``
  (ties: the higher index goes); a mask with fewer ones is returned as is.

  Example:
  >>> w = np.array([0.1, -3., 2., 0.5], "float32")
  >>> keras.ops.convert_to_numpy(prune_mask(np.ones(4, "float32"), w, 0.5)).tolist()
  [0.0, 1.0, 1.0, 0.0]
  """
  mask = ops.convert_to_tensor(mask)
  shape = ops.shape(mask)
  active = ops.greater(ops.reshape(mask, [-1]), 0)
  size = int(math.prod(shape))
  n_keep = size - int(math.floor(float(sparsity) * size))
  n_active = ops.sum(ops.cast(active, "int32"))
  n_drop = ops.maximum(n_active - n_keep, 0)
  dropped = _drop_positions(ops.abs(_flat(weights)), active, n_drop)
  kept = ops.logical_and(active, ops.logical_not(dropped))
  return ops.reshape(ops.cast(kept, mask.dtype), shape)


def top_mask_per_unit(scores, eligible, counts):
  """Boolean [rows, units]: in each column, its `counts` eligible largest scores.

  `top_mask` column by column, in one pass over the matrix: the radix select
  keeps a 256-bucket histogram per column. Ties go to the lower row (as
  ``tf.math.top_k`` over a unit's inputs). `counts` ([units] int32) must not
  exceed a column's eligible entries.

  Example:
  >>> s = np.array([[3., 1.], [3., 2.], [1., 2.]], "float32")
  >>> picked = top_mask_per_unit(s, np.ones((3, 2), bool), np.array([1, 2], "int32"))
  >>> keras.ops.convert_to_numpy(picked).astype(int).tolist()
  [[1, 0], [0, 1], [0, 1]]
  """
  keys = order_keys(scores)
  n_units = int(ops.shape(keys)[1])
  candidates = ops.convert_to_tensor(eligible, "bool")
  chosen = ops.zeros_like(candidates)
  remaining = ops.cast(counts, "int32")
  byte = ops.convert_to_tensor(255, "int32")
  bucket_base = ops.arange(n_units, dtype="int32")[None, :] * 256
  for shift in (24, 16, 8, 0):
    digit = ops.right_shift(keys, ops.convert_to_tensor(shift, "int32"))
    digit = digit + 128 if shift == 24 else ops.bitwise_and(digit, byte)
    histogram = ops.reshape(ops.segment_sum(
        ops.reshape(ops.cast(candidates, "int32"), [-1]),
        ops.reshape(digit + bucket_base, [-1]), num_segments=n_units * 256),
                            [n_units, 256])
    at_or_above = ops.flip(ops.cumsum(ops.flip(histogram, 1), axis=1), 1)
    boundary = ops.maximum(ops.sum(ops.cast(ops.greater_equal(
        at_or_above, remaining[:, None]), "int32"), axis=1) - 1, 0)
    above = (ops.take_along_axis(at_or_above, boundary[:, None], 1)[:, 0] -
             ops.take_along_axis(histogram, boundary[:, None], 1)[:, 0])
    chosen = ops.logical_or(chosen, ops.logical_and(
        candidates, ops.greater(digit, boundary[None, :])))
    candidates = ops.logical_and(candidates, ops.equal(digit, boundary[None, :]))
    remaining = remaining - above
  rank = ops.cumsum(ops.cast(candidates, "int32"), axis=0)
  return ops.logical_or(chosen, ops.logical_and(
      candidates, ops.less_equal(rank, remaining[None, :])))


def _fill_counts(fan_in, floor, budget, max_floor):
  """Per unit, how many inputs to grow so units reach `floor`, within `budget`.

  `keras_rigl.masks._fill_counts`'s water-filling (neediest level first, a
  level the budget cannot finish to the lowest unit indices), over the
  static levels 0..`max_floor` (>= floor) so that shapes do not depend on data.
  """
  need = ops.maximum(floor - fan_in, 0)
  levels = ops.arange(max_floor + 1, dtype="int32")[:, None]
  below = ops.sum(ops.minimum(ops.maximum(levels - fan_in[None, :], 0), need[None, :]), 1)
  level = ops.minimum(ops.sum(ops.cast(ops.less_equal(below, budget), "int32")) - 1, floor)
  base = ops.minimum(ops.maximum(level - fan_in, 0), need)
  rest = budget - ops.take(below, level)
  at_level = ops.logical_and(ops.less_equal(fan_in, level), ops.less(level, floor))
  extra = ops.logical_and(at_level,
                          ops.less_equal(ops.cumsum(ops.cast(at_level, "int32")), rest))
  return base + ops.cast(extra, "int32")


def min_fan_in_update(mask, weights, grow_scores, drop_fraction, min_fan_in,
                      drop_scores=None):
  """`keras_rigl.masks.min_fan_in_update`'s rule: units keep >= `min_fan_in` inputs.

  Output units are the mask's last axis. Each unit's ``floor = min(min_fan_in,
  rows, n_active // units)`` active inputs of largest drop score are never
  dropped; units below the floor after the drop grow their best inactive
  inputs first (neediest first, within the ``n_drop`` budget); the rest of the
  growth is `update_mask`'s. Static shapes (runs under ``jax.jit``).

  Example:
  >>> mask = np.array([[1., 1.], [1., 0.], [0., 0.]], "float32")  # unit 1: one input
  >>> w = np.array([[0.5, 0.1], [0.9, 0.], [0., 0.]], "float32")
  >>> g = np.array([[0., 0.], [0., 0.], [3., 0.]], "float32")
  >>> keras.ops.convert_to_numpy(min_fan_in_update(mask, w, g, 0.4, 1)[0]).tolist()
  [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]
  """
  mask = ops.convert_to_tensor(mask)
  shape = tuple(int(d) for d in ops.shape(mask))
  n_units = shape[-1] if shape else 0
  n_rows = math.prod(shape) // max(n_units, 1)
  max_floor = min(int(min_fan_in), n_rows)
  if not shape or max_floor == 0:
    return update_mask(mask, weights, grow_scores, drop_fraction, drop_scores)
  active = ops.greater(ops.reshape(mask, [-1]), 0)
  grow_scores, drop_scores = _flat_scores(active, weights, grow_scores, drop_scores)
  n_active = ops.sum(ops.cast(active, "int32"))
  floor = ops.minimum(max_floor, n_active // n_units)
  grid = lambda flat: ops.reshape(flat, [n_rows, n_units])
  active_per_unit = ops.sum(ops.cast(grid(active), "int32"), 0)
  protected = ops.reshape(top_mask_per_unit(
      grid(finite_scores(drop_scores)), grid(active),
      ops.minimum(floor, active_per_unit)), [-1])
  droppable = ops.logical_and(active, ops.logical_not(protected))
  n_drop = ops.minimum(drop_count(n_active, drop_fraction),
                       ops.sum(ops.cast(droppable, "int32")))
  dropped = _drop_positions(drop_scores, droppable, n_drop)
  kept = ops.logical_and(active, ops.logical_not(dropped))
  fan_in = ops.sum(ops.cast(grid(kept), "int32"), 0)
  fills = _fill_counts(fan_in, floor, n_drop, max_floor)
  filled = ops.reshape(top_mask_per_unit(grid(grow_scores), grid(ops.logical_not(kept)),
                                         fills), [-1])
  free = ops.logical_not(ops.logical_or(kept, filled))
  grown_rest = top_mask(grow_scores, free, n_drop - ops.sum(fills))
  new_active = ops.logical_or(ops.logical_or(kept, filled), grown_rest)
  grown = ops.logical_and(new_active, ops.logical_not(active))
  return (ops.reshape(ops.cast(new_active, mask.dtype), shape),
          ops.reshape(grown, shape))
