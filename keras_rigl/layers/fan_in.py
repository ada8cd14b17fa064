"""`min_fan_in` on compressed storage: every output unit keeps a minimum of inputs.

The rule is `keras_rigl.masks.min_fan_in_update`'s (output units are the
kernel's columns, ``position % n_cols``; ``floor = min(min_fan_in, n_rows,
nnz // n_cols)``):

1. drop: the ``n_drop`` entries of smallest ``|value|`` (ties: the higher
   position goes), sparing each unit's ``floor`` entries of largest ``|value|``
   (ties: the lower row stays); ``n_drop`` is cut to what may go;
2. fill: units below ``floor`` take their best-scoring positions that are not
   kept, neediest first, out of the ``n_drop`` budget (`masks._fill_counts`,
   the same function as the masked storage's);
3. grow: the rest of the budget, the best-scoring positions neither kept nor
   filled (ties: the lower position).

Given the same values and scores it picks the same connections as the masked
storage (tested, ties included), without a dense-size tensor: the drop side
is O(nnz) (one sort of the nnz entries by unit), the fill keeps a running
best ``[n_cols, floor]`` (at most nnz entries) over blocks of kernel rows, and
the growth is `update.top_free`'s block scan. Dynamic shapes only, as on the
masked storage. Plain TensorFlow; nothing here knows about Keras.
"""

from keras_rigl.backend import tf

from keras_rigl import masks as _masks
from keras_rigl.layers import update as _update


def unit_floor(min_fan_in, n_rows, n_cols, nnz):
  """The fan-in every unit can hold at once: ``min(min_fan_in, n_rows, nnz // n_cols)``.

  Example:
  >>> unit_floor(3, 10, 4, 9)
  2
  """
  return min(int(min_fan_in), int(n_rows), int(nnz) // max(int(n_cols), 1))


def protected_slots(values, indices, n_cols, floor):
  """Boolean [nnz]: each unit's `floor` entries of largest ``|value|``.

  Units are the columns (``indices % n_cols``); NaN values rank lowest (as
  `masks.finite_scores`), and among equal values the lower row is kept, as the
  masked storage's `_protected` does. `indices` ascending.

  Example:
  >>> protected_slots(tf.constant([1., 3., 2., 5.]), tf.constant([0, 1, 2, 4]), 2,
  ...                 1).numpy().tolist()
  [False, True, False, True]
  """
  indices = tf.convert_to_tensor(indices)
  nnz = int(indices.shape[0])
  cols = tf.cast(indices % n_cols, tf.int32)
  scores = _update.finite_scores(tf.abs(tf.cast(values, tf.float32)))
  # Best first; top_k keeps ties in slot order, which within a unit is row order.
  by_score = tf.math.top_k(scores, k=nnz, sorted=True).indices
  by_unit = tf.gather(by_score, tf.argsort(tf.gather(cols, by_score), stable=True))
  starts = tf.cumsum(tf.math.bincount(cols, minlength=n_cols, maxlength=n_cols),
                     exclusive=True)
  rank = tf.range(nnz) - tf.gather(starts, tf.gather(cols, by_unit))
  return tf.scatter_nd(by_unit[:, None], tf.cast(rank < floor, tf.int32), [nnz]) > 0


def fill_positions(blocks, n_cols, kept_sorted, fills, floor):
  """In each unit, its ``fills[unit]`` best-scoring positions not in `kept_sorted`.

  Args:
    blocks: ``(rows, n_blocks, score_block)`` (`update.gradient_blocks` or
      `update.random_blocks`).
    n_cols: units; kept_sorted: ascending positions that may not be chosen.
    fills: int32 [n_cols], each at most ``floor`` and at most the unit's free
      positions.
    floor: Python int >= 1.

  Returns:
    [sum(fills)] positions (kept_sorted's dtype), unit by unit. Ties go to the
    lower row, as `masks._fill_positions`. Nothing is scanned when no unit
    needs a fill.
  """
  rows, n_blocks, score_block = blocks
  pdt = kept_sorted.dtype
  block_size = rows * n_cols
  k_block = min(floor, rows)
  lowest = tf.constant(-float("inf"), tf.float32)

  def scan():
    def body(b, best_scores, best_rows):
      scores, base = score_block(b)
      scores = _update.without_kept(scores, base, block_size, kept_sorted)
      by_unit = tf.transpose(tf.reshape(scores, [rows, n_cols]))  # [n_cols, rows]
      top = tf.math.top_k(by_unit, k=k_block, sorted=True)
      # Held entries (earlier blocks: lower rows) first, so ties keep them.
      merged = tf.concat([best_scores, top.values], 1)
      merged_rows = tf.concat([best_rows, base // n_cols + tf.cast(top.indices, pdt)], 1)
      best = tf.math.top_k(merged, k=floor, sorted=True)
      return b + 1, best.values, tf.gather(merged_rows, best.indices, batch_dims=1)

    start = (tf.constant(0), tf.fill([n_cols, floor], lowest),
             tf.zeros([n_cols, floor], pdt))
    _, _, best_rows = tf.while_loop(lambda b, *_: b < n_blocks, body, start,
                                    parallel_iterations=1)
    valid = tf.range(floor)[None, :] < fills[:, None]
    positions = best_rows * n_cols + tf.range(n_cols, dtype=pdt)[:, None]
    return tf.boolean_mask(positions, valid)

  return tf.cond(tf.reduce_sum(fills) > 0, scan, lambda: tf.zeros([0], pdt))


def _merge_ascending(first, second):
  """The ascending union of two ascending position lists with no common entry."""
  count = tf.shape(first)[0] + tf.shape(second)[0]
  first_dest = tf.range(tf.shape(first)[0]) + tf.searchsorted(second, first,
                                                              out_type=tf.int32)
  second_dest = tf.range(tf.shape(second)[0]) + tf.searchsorted(first, second,
                                                                out_type=tf.int32)
  return tf.scatter_nd(tf.concat([first_dest, second_dest], 0)[:, None],
                       tf.concat([first, second], 0), [count])


def update(values, indices, n_rows, n_cols, drop_fraction, min_fan_in, blocks):
  """One drop/grow step that keeps every unit at >= floor inputs (see the module).

  Args:
    values: float [nnz]; indices: ascending int [nnz] (static nnz).
    n_rows, n_cols: the kernel's 2-D view; the columns are the output units.
    drop_fraction: scalar in [0, 1].
    min_fan_in: int >= 0.
    blocks: ``(rows, n_blocks, score_block)`` of the grow scores
      (`update.gradient_blocks` for RigL, `update.random_blocks` for SET).

  Returns:
    (new_indices, source) as `update.update`.

  Example (unit 1's only input, position 1, has the smallest |value|: plain
  RigL would drop it; here position 0 goes):
  >>> from keras_rigl.layers.update import gradient_blocks
  >>> values, indices = tf.constant([0.5, 0.1, 0.9]), tf.constant([0, 1, 2])
  >>> a, d = tf.constant([[0., 0., 1.]]), tf.constant([[3., 0.]])
  >>> new, _ = update(values, indices, 3, 2, 0.4, 1, gradient_blocks(a, d, 3, 2, tf.int32))
  >>> new.numpy().tolist()
  [1, 2, 4]
  """
  indices = tf.convert_to_tensor(indices)
  pdt = indices.dtype
  nnz = int(indices.shape[0])
  rows, n_blocks, score_block = blocks
  block_size = rows * n_cols
  floor = unit_floor(min_fan_in, n_rows, n_cols, nnz)
  if floor == 0:
    grow = lambda kept, k: _update.top_free(score_block, n_blocks, block_size, kept, k)
    return _update.update(values, indices, n_rows * n_cols, drop_fraction, grow)
  protected = protected_slots(values, indices, n_cols, floor)
  droppable = nnz - tf.reduce_sum(tf.cast(protected, tf.int32))
  n_drop = tf.minimum(_update.drop_count(nnz, drop_fraction), droppable)
  # As update.drop_slots, with the protected entries out of reach.
  scores = -_update.finite_scores(tf.abs(tf.cast(values, tf.float32)))
  scores = tf.where(protected, -float("inf"), scores)
  dropped = _update.select_largest(scores, indices, n_drop,
                                   ties_to_higher=_update.DROP_TIES_TO_HIGHER_POSITION,
                                   positions_sorted=True)
  still = tf.scatter_nd(dropped[:, None], tf.ones_like(dropped), [nnz]) < 1
  kept_sorted = tf.boolean_mask(indices, still)
  cols = tf.cast(indices % n_cols, tf.int32)
  fan_in = tf.math.bincount(tf.boolean_mask(cols, still), minlength=n_cols,
                            maxlength=n_cols, dtype=tf.int32)
  fills = _masks._fill_counts(fan_in, floor, n_drop)  # pylint: disable=protected-access
  filled = fill_positions(blocks, n_cols, kept_sorted, fills, floor)
  taken = _merge_ascending(kept_sorted, tf.sort(filled))
  rest = _update.top_free(score_block, n_blocks, block_size, taken,
                          n_drop - tf.reduce_sum(fills))
  return _update.merge_sorted(indices, still, tf.concat([filled, rest], 0))
