"""Layer-wise redistribution: how many connections each layer regrows.

Sparse momentum (SNFS, Dettmers & Zettlemoyer, 2019) and RigL with
``redistribution=`` prune every layer by magnitude, then split the *total*
pruned count over the layers in proportion to a per-layer statistic (mean
``|momentum|`` or mean ``|gradient|`` over the layer's active weights), so
that layers whose weights matter more to the loss become denser while the
total number of weights stays exactly the same.

`redistribute` computes that split in plain TensorFlow ops (runs eagerly or
inside the scheduler's compiled update, identical on every replica).
"""

import tensorflow as tf


def mean_abs_over_active(values, mask):
  """Mean of ``|values|`` over the active (mask > 0) positions, 0 if none.

  Example:
  >>> float(mean_abs_over_active(tf.constant([1., -3., 5.]), tf.constant([1., 1., 0.])))
  2.0
  """
  active = tf.cast(tf.reshape(mask, [-1]) > 0, tf.float64)
  values = tf.abs(tf.cast(tf.reshape(values, [-1]), tf.float64))
  count = tf.reduce_sum(active)
  # Where a position is inactive its value may be anything (even Inf): mask it out.
  total = tf.reduce_sum(tf.where(active > 0, values, tf.zeros_like(values)))
  return tf.where(count > 0, total / tf.maximum(count, 1.0), tf.zeros([], tf.float64))


def redistribute(total, statistics, capacities):
  """Splits `total` regrown connections over layers in proportion to `statistics`.

  Layer ``l`` gets about ``total * s_l / sum(s)`` connections, never more than
  ``capacities[l]`` (its free positions). What a full layer cannot take goes
  to the layers that still have room, again in proportion to their
  statistics, until everything is placed; the rounding remainder goes one
  each to the layers with the largest fractional shares (ties: the lower
  index). The counts always sum to exactly ``min(total, sum(capacities))``.

  A statistic that is not finite or not positive counts as 0; if every open
  layer's statistic is 0, the split is even over the open layers.

  Args:
    total: int scalar (or int tensor), the number of connections to place.
    statistics: float [L] tensor, one non-negative statistic per layer.
    capacities: int [L] tensor, the most each layer can take.

  Returns:
    int64 [L] tensor of counts.

  Example:
  >>> redistribute(10, [3.0, 1.0, 1.0], [100, 100, 100]).numpy().tolist()
  [6, 2, 2]
  >>> redistribute(10, [3.0, 1.0, 1.0], [2, 100, 100]).numpy().tolist()
  [2, 4, 4]
  """
  stats = tf.cast(tf.convert_to_tensor(statistics), tf.float64)
  stats = tf.where(tf.math.is_finite(stats) & (stats > 0), stats, tf.zeros_like(stats))
  capacities = tf.maximum(tf.cast(tf.convert_to_tensor(capacities), tf.int64), 0)
  total = tf.minimum(tf.cast(total, tf.int64), tf.reduce_sum(capacities))
  count = stats.shape[0]
  if count is None:
    raise ValueError("redistribute: statistics needs a static length (one per layer).")
  cap = tf.cast(capacities, tf.float64)

  def shares(full):
    """Weights of the layers that are not full (even split if all are 0)."""
    weights = tf.where(full, tf.zeros_like(stats), stats)
    even = tf.cast(tf.logical_not(full), tf.float64)
    weights = tf.where(tf.reduce_sum(weights) > 0, weights, even)
    rest = tf.cast(total, tf.float64) - tf.reduce_sum(tf.where(full, cap, tf.zeros_like(cap)))
    return weights, rest * weights / tf.maximum(tf.reduce_sum(weights), 1e-300)

  # Water filling: a layer whose proportional share reaches its capacity is
  # full; the others share what is left. The full set only grows, so
  # count + 1 passes reach the fixed point.
  full = capacities <= 0
  for _ in range(count + 1):
    _, ideal = shares(full)
    full = tf.logical_or(full, ideal >= cap)
  weights, ideal = shares(full)
  ideal = tf.where(full, cap, ideal)
  whole = tf.floor(ideal)
  counts = tf.cast(whole, tf.int64)
  # Rounding remainder (fewer than the open layers, each of which has room
  # for one more): one each to the largest fractional parts.
  remainder = total - tf.reduce_sum(counts)
  eligible = tf.logical_and(tf.logical_not(full), weights > 0)
  key = tf.where(eligible, ideal - whole, -tf.ones_like(ideal))
  order = tf.argsort(key, direction="DESCENDING", stable=True)
  extra = tf.scatter_nd(order[:, None],
                        tf.cast(tf.range(count, dtype=tf.int64) < remainder, tf.int64),
                        [count])
  return counts + extra
