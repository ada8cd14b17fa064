"""The compressed drop/grow update with static shapes, for XLA (``jit_compile=True``, TPUs).

`keras_rigl.layers.update` selects with dynamic shapes (exactly ``n_drop``
entries, kept sets of varying length), which XLA cannot compile. Here every
tensor has a shape fixed at trace time:

* the drop takes the ``max_count`` smallest |values| in order and keeps the
  first ``n_drop`` (``max_count`` is a static bound on ``n_drop``: the number
  of entries times the largest drop fraction of the schedule);
* RigL's growth walks the blocks of kernel rows with a running top-``max_count``
  (padded with -inf), excluding the kept positions of a block through a
  window of ``min(nnz, block)`` stored positions, so nothing of the dense size
  and nothing larger than one block exists;
* SET draws a fixed number of random candidates (several rounds' worth at
  once) and keeps the first ``n_drop`` that are free and distinct;
* kept and grown positions are merged in order with fixed-size scatters (a
  dummy slot absorbs the padding).

Given the same inputs it picks the same connections as the dynamic update
(RigL: tested equal, ties included) and returns the same ``(new_indices,
source)``. Plain TensorFlow; nothing here knows about Keras.
"""

from keras_rigl.backend import tf

from keras_rigl.layers import update as _update

# SET: candidate draws per wanted position, all drawn at once. Free positions
# are at least 3/4 of the range when this path is used (see positions.py), so
# 6 draws per wanted one leave a margin of many standard deviations.
_SET_DRAWS_PER_POSITION = 6


def _max_of(dtype):
  return tf.constant(dtype.max, dtype)


def drop_static(values, n_drop, max_count):
  """Boolean [nnz]: the `n_drop` entries of smallest |value| (ascending positions).

  Same choice and tie rule as `update.drop_slots`; `max_count` (a Python int
  >= n_drop) fixes the selection's size.

  Example:
  >>> drop_static(tf.constant([0.5, -0.1, 2.0]), tf.constant(1), 2).numpy().tolist()
  [False, True, False]
  """
  nnz = int(values.shape[0])
  k = min(int(max_count), nnz)
  scores = -_update.finite_scores(tf.abs(tf.cast(values, tf.float32)))
  if _update.DROP_TIES_TO_HIGHER_POSITION:
    picked = nnz - 1 - tf.math.top_k(tf.reverse(scores, [0]), k=k, sorted=True).indices
  else:
    picked = tf.math.top_k(scores, k=k, sorted=True).indices
  valid = tf.cast(tf.range(k) < n_drop, tf.int32)
  return tf.scatter_nd(picked[:, None], valid, [nnz]) > 0


def _kept_membership(candidates, indices, still):
  """Boolean: the candidate positions that are stored and stay."""
  nnz = int(indices.shape[0])
  at = tf.minimum(tf.searchsorted(indices, candidates, side="left", out_type=tf.int32), nnz - 1)
  return tf.logical_and(tf.equal(tf.gather(indices, at), candidates), tf.gather(still, at))


def rigl_grow_static(a, d, n_rows, n_cols, indices, still, max_count, block_elements=None):
  """`rigl_grow` with static shapes: the best `max_count` free positions, best first.

  Args:
    a, d, n_rows, n_cols, block_elements: as `update.rigl_grow`.
    indices: ascending stored positions [nnz] (int32/int64).
    still: boolean [nnz], the entries that stay (their positions cannot grow).
    max_count: Python int, the static number of candidates returned.

  Returns:
    [max_count] positions (indices' dtype) by decreasing |a^T d|, ties to the
    lower position; the first n_drop of them are `rigl_grow`'s choice.

  Example:
  >>> a, d = tf.constant([[1., 0.]]), tf.constant([[0., 2., 1.]])
  >>> rigl_grow_static(a, d, 2, 3, tf.constant([1, 4]), tf.constant([True, False]),
  ...                  2).numpy().tolist()
  [2, 0]
  """
  rows, n_blocks, block_size, a, d, ids = _update.grow_blocks(a, d, n_rows, n_cols,
                                                              block_elements)
  indices = tf.convert_to_tensor(indices)
  pdt = indices.dtype
  nnz = int(indices.shape[0])
  window = max(1, min(nnz, block_size))
  k = int(max_count)
  k_block = min(k, block_size)
  lowest = tf.constant(-float("inf"), tf.float32)
  padded_indices = tf.concat([indices, tf.fill([window], _max_of(pdt))], 0) if nnz < window \
      else indices
  padded_still = tf.concat([still, tf.zeros([window], tf.bool)], 0) if nnz < window else still

  def body(b, best_scores, best_positions):
    scores, base = _update.block_scores(b, rows, a, d, ids, n_rows, n_cols, pdt)
    # The stored positions of this block lie in a window of at most
    # min(nnz, block) entries starting at the first one >= base.
    lo = tf.searchsorted(indices, tf.reshape(base, [1]), out_type=tf.int32)[0]
    start = tf.maximum(tf.minimum(lo, nnz - window), 0)
    here = tf.slice(padded_indices, [start], [window]) - base
    inside = tf.logical_and(tf.logical_and(here >= 0, here < block_size),
                            tf.slice(padded_still, [start], [window]))
    here = tf.where(inside, here, block_size)  # Outside: a dummy slot, cut off.
    scores = tf.tensor_scatter_nd_update(
        tf.concat([scores, [lowest]], 0), tf.cast(here, tf.int32)[:, None],
        tf.fill([window], lowest))[:block_size]
    top = tf.math.top_k(scores, k=k_block, sorted=True)
    # Held entries first (lower positions): ties keep them, as in rigl_grow.
    merged = tf.concat([best_scores, top.values], 0)
    positions = tf.concat([best_positions, base + tf.cast(top.indices, pdt)], 0)
    best = tf.math.top_k(merged, k=k, sorted=True)
    return b + 1, best.values, tf.gather(positions, best.indices)

  start = (tf.constant(0), tf.fill([k], lowest), tf.fill([k], _max_of(pdt)))
  _, _, best = tf.while_loop(lambda b, *_: b < n_blocks, body, start, parallel_iterations=1)
  return best


def set_grow_static(size, indices, still, max_count, n_drop, seed):
  """SET growth with static shapes: [max_count] random free positions.

  The first `n_drop` are distinct, not among the staying positions, and
  uniformly random (stateless Philox, keyed by `seed`: the same numbers
  under XLA as outside it, which the default algorithm does not promise);
  the rest is padding.

  Example:
  >>> p = set_grow_static(10**6, tf.constant([3, 4]), tf.constant([True, True]), 5, 5, (1, 2))
  >>> len(set(p.numpy().tolist()) - {3, 4})
  5
  """
  indices = tf.convert_to_tensor(indices)
  pdt = indices.dtype
  k = int(max_count)
  nnz = int(indices.shape[0])
  seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
  if 4 * nnz >= size:  # Small range: score every position, as sample_positions does.
    everything = tf.range(size, dtype=pdt)
    scores = tf.random.stateless_uniform([size], seed=seed, alg="philox")
    scores = tf.where(_kept_membership(everything, indices, still), -1.0, scores)
    # Index = position here.
    return tf.cast(tf.math.top_k(scores, k=min(k, size), sorted=True).indices, pdt)
  draws = tf.random.stateless_uniform([_SET_DRAWS_PER_POSITION * k + 16], seed=seed,
                                      minval=0, maxval=size, dtype=tf.int64, alg="philox")
  draws = tf.cast(draws, pdt)
  n = int(draws.shape[0])
  # First occurrence of each value, in draw order.
  order = tf.argsort(draws, stable=True)
  ordered = tf.gather(draws, order)
  repeat = tf.concat([[False], tf.equal(ordered[1:], ordered[:-1])], 0)
  first = tf.scatter_nd(order[:, None], tf.cast(tf.logical_not(repeat), tf.int32), [n]) > 0
  ok = tf.logical_and(first, tf.logical_not(_kept_membership(draws, indices, still)))
  rank = tf.cumsum(tf.cast(ok, tf.int32)) - 1
  where = tf.where(tf.logical_and(ok, rank < k), rank, k)
  tf.debugging.assert_greater_equal(rank[-1] + 1, tf.cast(n_drop, tf.int32),
                                    message="set_grow_static: too few free positions drawn")
  return tf.tensor_scatter_nd_update(tf.fill([k + 1], _max_of(pdt)), where[:, None], draws)[:k]


def merge_static(indices, still, grown, n_grown):
  """`update.merge_sorted` with static shapes.

  Args:
    indices: ascending positions [nnz]; still: boolean [nnz] (entries that stay).
    grown: [max_count] positions, the first `n_grown` real (any order), the
      rest padding.

  Returns:
    (new_indices [nnz] ascending, source int32 [nnz]) as `update.merge_sorted`.

  Example:
  >>> new, source = merge_static(tf.constant([10, 11, 12]), tf.constant([False, True, False]),
  ...                            tf.constant([20, 10, 0]), 2)
  >>> new.numpy().tolist(), source.numpy().tolist()
  ([10, 11, 20], [0, 1, -1])
  """
  indices = tf.convert_to_tensor(indices)
  pdt = indices.dtype
  nnz = int(indices.shape[0])
  k = int(grown.shape[0])
  real = tf.range(k) < tf.cast(n_grown, tf.int32)
  grown = tf.sort(tf.where(real, tf.cast(grown, pdt), _max_of(pdt)))  # Padding last.
  still_i = tf.cast(still, tf.int32)
  kept_dest = (tf.cumsum(still_i, exclusive=True) +
               tf.searchsorted(grown, indices, side="left", out_type=tf.int32))
  kept_dest = tf.where(still, kept_dest, nnz)
  below = tf.searchsorted(indices, grown, side="left", out_type=tf.int32)  # In [0, nnz].
  kept_below = tf.gather(tf.concat([[0], tf.cumsum(still_i)], 0), below)
  grown_dest = tf.where(real, tf.range(k) + kept_below, nnz)
  at = tf.minimum(below, nnz - 1)
  regrown = tf.logical_and(real, tf.equal(tf.gather(indices, at), grown))
  dest = tf.concat([kept_dest, grown_dest], 0)[:, None]
  new_indices = tf.tensor_scatter_nd_update(
      tf.zeros([nnz + 1], pdt), dest, tf.concat([indices, grown], 0))[:nnz]
  source = tf.tensor_scatter_nd_update(
      tf.zeros([nnz + 1], tf.int32), dest,
      tf.concat([tf.range(nnz), tf.where(regrown, at, -1)], 0))[:nnz]
  return new_indices, source


def update_static(values, indices, drop_fraction, grow, max_count):
  """One drop/grow step with static shapes; same result as `update.update`.

  Args:
    values: float [nnz]; indices: ascending int [nnz] (static nnz).
    drop_fraction: scalar in [0, 1].
    grow: callable ``(still bool [nnz], max_count, n_drop) -> [max_count]
      positions`` whose first n_drop are the grown ones
      (`rigl_grow_static` or `set_grow_static` with the rest bound).
    max_count: Python int, a static bound on the moved entries (nnz times
      the largest drop fraction); larger n_drop values are clipped to it.

  Returns:
    (new_indices, source) as `update.update`.

  Example:
  >>> values, indices = tf.constant([0.1, 2.0]), tf.constant([0, 1])
  >>> grow = lambda still, k, n: tf.constant([2, 3], tf.int32)[:k]
  >>> new, source = update_static(values, indices, 0.5, grow, 1)
  >>> new.numpy().tolist(), source.numpy().tolist()
  ([1, 2], [1, -1])
  """
  indices = tf.convert_to_tensor(indices)
  nnz = int(indices.shape[0])
  k = max(1, min(int(max_count), nnz))
  n_drop = tf.minimum(_update.drop_count(nnz, drop_fraction), k)
  still = tf.logical_not(drop_static(values, n_drop, k))
  grown = grow(still, k, n_drop)
  return merge_static(indices, still, grown, n_drop)
