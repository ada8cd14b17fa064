"""The RigL / SET drop-and-grow update on compressed storage, in O(nnz) memory.

A compressed weight holds ``values[nnz]`` and flat positions ``indices[nnz]``
into its dense ``[n_rows, n_cols]`` kernel, positions ascending. An update

* drops the ``n_drop`` active entries of smallest ``|value|`` (O(nnz));
* grows ``n_drop`` positions among all that are not kept (a just-dropped one
  may come back): RigL takes the largest ``|dL/dW|``, computed one block of
  kernel rows at a time from the layer's inputs ``a`` and the gradient ``d``
  w.r.t. its pre-activation output (``dL/dW = a^T d``), keeping a buffer of
  candidates cut to the best k now and then, so extra memory is a few blocks
  plus O(k), never the dense size; SET draws random positions (stateless,
  keyed by seed and step);
* merges kept and grown positions in order (no sort over the nnz entries:
  the drop needs none because positions are ascending, the merge sorts only
  the k grown ones) and says, per new entry, which old entry's value and
  optimizer slots it keeps (`merge_sorted`).

`keras_rigl.layers.static_update` is the same update with static shapes (XLA).

Selection and tie rules are the masked storage's (`keras_rigl.masks`):
given the same weights and gradients both storages pick the same
connections. Plain TensorFlow; nothing here knows about Keras.
"""

from keras_rigl.backend import tf

from keras_rigl import masks as _masks
from keras_rigl.layers.positions import sample_positions

# Default bound on the elements of one block of dense-gradient scores (8 MiB
# of float32). Peak extra memory of a growth step is a small multiple of it.
DEFAULT_BLOCK_ELEMENTS = 1 << 21

# `top_free` starts its scan at the score the first block's share of this many
# times k would need (blocks alike): the buffer then holds about this many
# times k candidates. A larger margin rarely needs the exact re-scan; a smaller
# one buffers less.
ESTIMATE_MARGIN = 1.5

# One rule for both storages: how many connections move, how non-finite
# scores rank (masks.py), and drop ties go to the HIGHER flat index, as there.
drop_count = _masks.drop_count
finite_scores = _masks.finite_scores
DROP_TIES_TO_HIGHER_POSITION = True


def select_largest(scores, positions, k, ties_to_higher=False, positions_sorted=False):
  """Indices into `scores` of its `k` largest entries.

  The tie rule lives here: among equal scores the entry with the lower
  `positions` value wins (or the higher one with `ties_to_higher`). With
  `positions_sorted` (ascending, as compressed layers keep them) no sort is
  needed; otherwise the arrays are first put in position order
  (O(nnz log nnz)).

  Example:
  >>> select_largest(tf.constant([1., 3., 3.]), tf.constant([5, 9, 2]), 1).numpy().tolist()
  [2]
  >>> select_largest(tf.constant([1., 3., 3.]), tf.constant([2, 5, 9]), 1,
  ...                ties_to_higher=True, positions_sorted=True).numpy().tolist()
  [2]
  """
  if positions_sorted:
    if not ties_to_higher:
      return tf.math.top_k(scores, k=k, sorted=False).indices
    last = tf.shape(scores)[0] - 1
    return last - tf.math.top_k(tf.reverse(scores, [0]), k=k, sorted=False).indices
  order = tf.argsort(positions, direction="DESCENDING" if ties_to_higher else "ASCENDING")
  # top_k breaks ties to the lower index: in position order, the lower position.
  best = tf.math.top_k(tf.gather(scores, order), k=k, sorted=False).indices
  return tf.gather(order, best)


def drop_slots(values, positions, n_drop, positions_sorted=False):
  """Array slots of the `n_drop` entries of smallest |value| (NaN go first).

  Example:
  >>> drop_slots(tf.constant([0.5, -0.1, 2.0]), tf.constant([7, 3, 1]), 1).numpy().tolist()
  [1]
  """
  # finite_scores maps |NaN| to the lowest score: negated, it is dropped first.
  scores = -finite_scores(tf.abs(tf.cast(values, tf.float32)))
  return select_largest(scores, positions, n_drop,
                        ties_to_higher=DROP_TIES_TO_HIGHER_POSITION,
                        positions_sorted=positions_sorted)



def grow_blocks(a, d, n_rows, n_cols, block_elements=None):
  """Row blocks of the growth score ``a^T d`` and its inputs, ready to scan.

  Returns (rows per block, number of blocks, entries per block, a, d, ids):
  `a` is padded to whole blocks of rows (float32), or flattened int64 ids for
  an embedding; `d` is float32. Shared by the dynamic and the static update.
  """
  rows = _rows_per_block(n_rows, n_cols, block_elements)
  n_blocks = -(-n_rows // rows)
  a = tf.convert_to_tensor(a)
  ids = a.dtype.is_integer
  if ids:
    a = tf.cast(tf.reshape(a, [-1]), tf.int64)
  else:
    a = tf.pad(tf.cast(a, tf.float32), [[0, 0], [0, n_blocks * rows - n_rows]])
  return rows, n_blocks, rows * n_cols, a, tf.cast(d, tf.float32), ids


def _rows_per_block(n_rows, n_cols, block_elements):
  block_elements = int(block_elements or DEFAULT_BLOCK_ELEMENTS)
  return max(1, min(n_rows, block_elements // n_cols))


def block_scores(b, rows, a, d, ids, n_rows, n_cols, dtype):
  """Growth scores ``|a^T d|`` of row block `b`, flat, and the block's first position.

  The one place both updates (`rigl_grow`, `static_update.rigl_grow_static`)
  and the compressed `min_fan_in` update score a block. `rows`, `a`, `d`,
  `ids` come from `grow_blocks`; `dtype` is the positions' int dtype. Scores
  rank as `finite_scores` makes them (NaN lowest finite, Inf largest
  finite); rows past `n_rows` (padding) score -inf.

  Returns:
    (float32 [rows * n_cols] scores in row-major order, the flat position of
    their first entry as a `dtype` scalar).

  Example:
  >>> rows, n_blocks, _, a, d, ids = grow_blocks(tf.constant([[1., 2.]]),
  ...                                            tf.constant([[3., -1.]]), 2, 2, 2)
  >>> scores, base = block_scores(1, rows, a, d, ids, 2, 2, tf.int32)
  >>> scores.numpy().tolist(), int(base)
  ([6.0, 2.0], 2)
  """
  lowest = tf.constant(-float("inf"), tf.float32)
  big = tf.constant(tf.float32.max, tf.float32)
  first = tf.cast(b, dtype) * rows
  if ids:
    a_block = tf.one_hot(a - tf.cast(first, tf.int64), rows, dtype=tf.float32)  # [M, rows]
  else:
    a_block = tf.slice(a, [0, tf.cast(b, tf.int32) * rows], [-1, rows])
  scores = tf.abs(tf.matmul(a_block, d, transpose_a=True))  # [rows, n_cols]
  real_row = tf.range(rows, dtype=dtype)[:, None] + first < n_rows
  scores = tf.where(tf.math.is_nan(scores), -big, tf.minimum(scores, big))
  return tf.reshape(tf.where(real_row, scores, lowest), [-1]), first * n_cols


def gradient_blocks(a, d, n_rows, n_cols, dtype, block_elements=None):
  """``(rows, n_blocks, score_block)``: RigL's scores as `top_free` and
  `keras_rigl.layers.fan_in` scan them (`score_block(b)` is `block_scores`)."""
  rows, n_blocks, _, a, d, ids = grow_blocks(a, d, n_rows, n_cols, block_elements)
  return rows, n_blocks, lambda b: block_scores(b, rows, a, d, ids, n_rows, n_cols, dtype)


def random_blocks(n_rows, n_cols, seed, dtype, block_elements=None):
  """``(rows, n_blocks, score_block)`` with uniform random scores in [0, 1).

  The scores of block `b` come from a stateless Philox generator keyed by
  `seed` (an int64 pair) folded with `b`: the same seed and block size give
  the same numbers on every replica. Used where SET must rank every free
  position (its `min_fan_in` update, O(N) time in blocks); plain SET growth
  samples positions instead (`set_grow`, O(nnz)).
  """
  rows = _rows_per_block(n_rows, n_cols, block_elements)
  n_blocks = -(-n_rows // rows)
  seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)

  def score_block(b):
    first = tf.cast(b, dtype) * rows
    scores = tf.random.stateless_uniform([rows * n_cols], seed=tf.random.fold_in(seed, b, alg="philox"),
                                         alg="philox")
    real = tf.range(rows * n_cols, dtype=dtype) < (n_rows - first) * n_cols
    return tf.where(real, scores, -float("inf")), first * n_cols

  return rows, n_blocks, score_block


def rigl_grow(a, d, n_rows, n_cols, kept_sorted, k, block_elements=None):
  """The `k` positions not in `kept_sorted` with the largest ``|a^T d|``.

  Args:
    a: the layer's inputs, float [M, n_rows], or int ids [M] (embedding: the
      row of each example; a one-hot row of the kernel).
    d: the loss gradient w.r.t. the layer's pre-activation output, [M, n_cols].
      Rows of several batches / replicas are simply concatenated: the sum of
      their gradients is ``concat(a)^T concat(d)``.
    n_rows, n_cols: the dense kernel's shape (Python ints).
    kept_sorted: ascending int32/int64 positions that may not be grown.
    k: how many to grow (int32 scalar); at most N - len(kept_sorted).
    block_elements: bound on the scores of one block (rows * n_cols, at
      least one row); default 2**21 (8 MiB). Peak extra memory is a few
      blocks plus O(k + len(kept_sorted)).

  Returns:
    [k] positions (kept_sorted's dtype), best first; ties go to the lower
    position, as in masks.py.

  Example:
  >>> a = tf.constant([[1., 0.]])          # one example, n_rows = 2
  >>> d = tf.constant([[0., 2., 1.]])      # n_cols = 3
  >>> rigl_grow(a, d, 2, 3, tf.constant([1], tf.int64), 1).numpy().tolist()
  [2]
  """
  kept_sorted = _positions_tensor(kept_sorted)
  rows, n_blocks, score_block = gradient_blocks(a, d, n_rows, n_cols, kept_sorted.dtype,
                                                block_elements)
  return top_free(score_block, n_blocks, rows * n_cols, kept_sorted, k)


def _positions_tensor(positions):
  positions = tf.convert_to_tensor(positions)
  if positions.dtype not in (tf.int32, tf.int64):
    positions = tf.cast(positions, tf.int64)
  return positions


def without_kept(scores, base, block_size, kept_sorted):
  """A block's flat `scores` with the positions of `kept_sorted` in it set to -inf.

  The block covers positions [base, base + block_size); `kept_sorted` is
  ascending (a search finds its part of the block: O(log nnz + kept here)).

  Example:
  >>> without_kept(tf.constant([1., 2., 3.]), 10, 3, tf.constant([4, 11, 20])).numpy().tolist()
  [1.0, -inf, 3.0]
  """
  pdt = kept_sorted.dtype
  base = tf.cast(base, pdt)
  lo = tf.searchsorted(kept_sorted, tf.reshape(base, [1]), out_type=pdt)[0]
  hi = tf.searchsorted(kept_sorted, tf.reshape(base + block_size, [1]), out_type=pdt)[0]
  kept_here = kept_sorted[lo:hi] - base
  return tf.tensor_scatter_nd_update(
      scores, kept_here[:, None], tf.fill(tf.shape(kept_here), -float("inf")))


def top_free(score_block, n_blocks, block_size, kept_sorted, k):
  """The `k` best-scoring positions not in `kept_sorted`, scanning blocks.

  Args:
    score_block: ``b -> (float32 [block_size] scores, first position)`` for
      b in [0, n_blocks) (`gradient_blocks`, `random_blocks`); blocks are
      consecutive and ascending.
    kept_sorted: ascending int positions that may not be chosen.
    k: int32 scalar.

  Returns:
    [k] positions (kept_sorted's dtype), best first; ties to the lower position.
  """
  kept_sorted = _positions_tensor(kept_sorted)
  k = tf.cast(k, tf.int32)
  if n_blocks == 1:
    return _scan_blocks(score_block, 1, block_size, kept_sorted, k, None)[0]
  # The first block sets a starting threshold: the score its own share of
  # ESTIMATE_MARGIN * k would need if the blocks were alike. Blocks then pass
  # on a few entries instead of all of theirs, so the candidate buffer stays
  # near that margin times k and is rarely cut. The choice stays exact: if
  # fewer than k free entries reach the estimate, the scan runs again from -inf.
  scores, base = score_block(0)
  scores = without_kept(scores, base, block_size, kept_sorted)
  size = tf.cast(n_blocks * block_size, tf.float32)
  free = size - tf.cast(tf.shape(kept_sorted)[0], tf.float32)
  share = tf.cast(tf.math.ceil(ESTIMATE_MARGIN * tf.cast(k, tf.float32) * block_size
                               / tf.maximum(free, 1.0)), tf.int32)
  share = tf.clip_by_value(share, 1, block_size)
  estimate = tf.reduce_min(tf.math.top_k(scores, k=share, sorted=False).values)
  # Strictly above the value just below the estimate: ties at it are candidates.
  start = tf.math.nextafter(estimate, tf.constant(-float("inf"), tf.float32))
  best, found = _scan_blocks(score_block, n_blocks, block_size, kept_sorted, k, start)
  return tf.cond(found >= k, lambda: best,
                 lambda: _scan_blocks(score_block, n_blocks, block_size, kept_sorted, k,
                                      None)[0])


def _scan_blocks(score_block, n_blocks, block_size, kept_sorted, k, start):
  """(best min(k, found) positions, found): the scan behind `top_free`.

  Only entries scoring above `start` (None: -inf) are candidates; `found`
  counts them (capped once a cut has kept k).
  """
  pdt = kept_sorted.dtype
  lowest = tf.constant(-float("inf"), tf.float32)
  big = tf.constant(tf.float32.max, tf.float32)
  threshold = lowest if start is None else start
  limit = 2 * k + block_size

  def body(b, buffer_scores, buffer_positions, threshold):
    scores, base = score_block(b)
    scores = without_kept(scores, base, block_size, kept_sorted)
    # Candidates are buffered and cut down to the best k only when the buffer
    # holds more than 2k (+ one block): a selection over O(k) entries then
    # happens a few times per update rather than once per block. After a cut,
    # a block entry must beat the k-th best strictly: on a tie the held one
    # has the lower position and wins.
    where = tf.where(scores > threshold)[:, 0]
    # Held entries first, then block entries in position order: top_k's
    # "ties to the lower index" is "ties to the lower position".
    buffer_scores = tf.concat([buffer_scores, tf.gather(scores, where)], 0)
    buffer_positions = tf.concat([buffer_positions, base + tf.cast(where, pdt)], 0)

    def cut():
      top = tf.math.top_k(buffer_scores, k=k, sorted=True)
      return (top.values, tf.gather(buffer_positions, top.indices),
              tf.reduce_min(tf.concat([top.values, [big]], 0)))

    return (b + 1,) + tuple(tf.cond(
        tf.shape(buffer_scores)[0] > limit, cut,
        lambda: (buffer_scores, buffer_positions, threshold)))

  init = (tf.constant(0), tf.zeros([0], tf.float32), tf.zeros([0], pdt), threshold)
  _, buffer_scores, buffer_positions, _ = tf.while_loop(
      lambda b, *_: b < n_blocks, body, init,
      shape_invariants=(tf.TensorShape([]), tf.TensorShape([None]), tf.TensorShape([None]),
                        tf.TensorShape([])),
      parallel_iterations=1)
  found = tf.shape(buffer_scores)[0]
  top = tf.math.top_k(buffer_scores, k=tf.minimum(k, found), sorted=True)
  return tf.gather(buffer_positions, top.indices), found


def set_grow(size, kept_sorted, k, seed, nnz):
  """`k` random positions not in `kept_sorted` (SET), O(nnz) memory.

  Example:
  >>> p = set_grow(10**6, tf.constant([3, 4], tf.int64), 5, (1, 2), nnz=7)
  >>> len(set(p.numpy().tolist()) - {3, 4})
  5
  """
  return sample_positions(size, k, seed, exclude=kept_sorted, bound=nnz)


def merge_sorted(indices, still, grown):
  """The new ascending positions and where each entry's state comes from.

  `indices` are the old ascending positions, `still` marks the entries that
  stay, `grown` the new positions (none of them among the staying ones; any
  order). The kept and grown positions are merged in order without sorting
  the nnz entries (only the grown ones are sorted): each entry's destination
  is its rank in its own list plus the count of the other list below it.

  A dropped connection that is grown again keeps its value and optimizer
  state (as in the masked storage, where its mask never changes).

  Returns:
    (new_indices ascending, indices' dtype, one per kept or grown entry
    (nnz when as many grow as were dropped); source int32, the same length:
    the old slot whose value and slots the entry keeps, -1 for a new
    connection).

  Example:
  >>> new, source = merge_sorted(tf.constant([10, 11, 12]), tf.constant([False, True, False]),
  ...                            tf.constant([20, 10]))
  >>> new.numpy().tolist(), source.numpy().tolist()
  ([10, 11, 20], [0, 1, -1])
  """
  indices = tf.convert_to_tensor(indices)
  dtype = indices.dtype
  nnz = tf.shape(indices)[0]
  grown = tf.sort(tf.cast(grown, dtype))
  kept_slots = tf.cast(tf.where(still)[:, 0], tf.int32)
  kept = tf.gather(indices, kept_slots)
  count = tf.shape(kept)[0] + tf.shape(grown)[0]  # nnz unless redistribution moves it.
  kept_dest = (tf.range(tf.shape(kept)[0]) +
               tf.searchsorted(grown, kept, side="left", out_type=tf.int32))
  grown_dest = (tf.range(tf.shape(grown)[0]) +
                tf.searchsorted(kept, grown, side="left", out_type=tf.int32))
  at = tf.minimum(tf.searchsorted(indices, grown, side="left", out_type=tf.int32), nnz - 1)
  regrown = tf.equal(tf.gather(indices, at), grown)
  grown_source = tf.where(regrown, at, -1)
  dest = tf.concat([kept_dest, grown_dest], 0)[:, None]
  new_indices = tf.scatter_nd(dest, tf.concat([kept, grown], 0), [count])
  # +1 so that the sum-scatter into zeros keeps -1 for new connections.
  source = tf.scatter_nd(dest, tf.concat([kept_slots, grown_source], 0) + 1, [count]) - 1
  return new_indices, source


def update(values, indices, size, drop_fraction, grow, n_drop=None, grow_count=None):
  """One drop/grow step of a compressed weight whose positions are ascending.

  Args:
    values: float [nnz] current values.
    indices: int [nnz] current flat positions, ascending (compressed layers
      keep them so).
    size: dense size N (Python int).
    drop_fraction: scalar in [0, 1].
    grow: callable ``(kept_sorted, k int32) -> [k] positions``
      (`rigl_grow` or `set_grow` with their other arguments bound); kept_sorted
      has indices' dtype.
    n_drop: optional int scalar, how many to drop instead of
      ``drop_count(nnz, drop_fraction)`` (redistribution; clipped to nnz).
    grow_count: optional int scalar, how many to grow instead of as many as
      were dropped (redistribution: the nominal drop). The caller keeps it
      within the free positions and its slots.

  Returns:
    (new_indices, source) as `merge_sorted`: the new ascending positions and,
    per entry, the old slot it keeps its value and optimizer state from (-1:
    a new connection); ``nnz - n_drop + grow_count`` of them. No sort over
    the nnz entries, O(nnz) extra memory (a few int32 per entry) plus what
    `grow` needs.

  Example:
  >>> values = tf.constant([0.1, 2.0])
  >>> indices = tf.constant([0, 1])
  >>> grow = lambda kept, k: tf.constant([2], tf.int32)[:k]
  >>> new, source = update(values, indices, 4, 0.5, grow)
  >>> new.numpy().tolist(), source.numpy().tolist()
  ([1, 2], [1, -1])
  """
  del size
  indices = tf.convert_to_tensor(indices)
  nnz = tf.shape(indices)[0]
  nominal = drop_count(nnz, drop_fraction)
  if n_drop is None:
    n_drop = nominal
  else:
    n_drop = tf.clip_by_value(tf.cast(n_drop, tf.int32), 0, nnz)
  grow_count = n_drop if grow_count is None else tf.maximum(tf.cast(grow_count, tf.int32), 0)
  dropped = drop_slots(values, indices, n_drop, positions_sorted=True)
  still = tf.scatter_nd(dropped[:, None], tf.ones_like(dropped), [nnz]) < 1
  kept_sorted = tf.boolean_mask(indices, still)  # Ascending: no sort.
  grown = grow(kept_sorted, grow_count)
  return merge_sorted(indices, still, grown)
