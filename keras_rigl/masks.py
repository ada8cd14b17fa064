"""Mask initialisation and the RigL drop/grow update, in plain TensorFlow ops.

Nothing here knows about Keras: these functions take and return tensors, run
eagerly or inside ``tf.function``, and keep static shapes when given a static
bound on the number of connections that move (``max_update``).
"""

import numbers
import zlib

from keras_rigl.backend import tf

from keras_rigl.distributions import num_zeros


def name_seed(seed, name):
  """A stateless-RNG seed pair from an integer seed and a (layer) name.

  The name is hashed with CRC32, which is stable across processes, so the
  same seed and name give the same pair on every replica and worker and in any
  layer build order.
  """
  return (int(seed) & 0x7FFFFFFF, zlib.crc32(str(name).encode("utf-8")) & 0x7FFFFFFF)


def random_mask(shape, sparsity, seed, dtype="float32"):
  """A 0/1 mask with exactly ``floor(sparsity * N)`` zeros at random positions.

  Args:
    shape: the weight's shape.
    sparsity: fraction of zeros in [0, 1).
    seed: a pair of ints for the stateless generator (see `name_seed`).
    dtype: the mask's dtype.

  Example:
  >>> m = random_mask((4, 5), 0.5, seed=(0, 1))
  >>> int(tf.reduce_sum(m))
  10
  """
  shape = tf.TensorShape(shape)
  size = shape.num_elements()
  n_ones = size - num_zeros(size, sparsity)
  scores = tf.random.stateless_uniform([size], seed=seed)
  _, keep = tf.math.top_k(scores, k=n_ones, sorted=False)
  flat = tf.scatter_nd(keep[:, None], tf.ones([n_ones], dtype), [size])
  return tf.reshape(flat, shape)


_RADIX_BITS = 12  # 4096 buckets for the first pass of the selection.
_SMALL = 16384     # Below this (static) size a plain top_k is as fast.


def _order_keys(values):
  """int32 keys that order like the float32 values (-inf lowest)."""
  bits = tf.bitcast(tf.cast(values, tf.float32), tf.int32)
  return tf.where(bits < 0, tf.bitwise.bitwise_xor(bits, tf.constant(0x7FFFFFFF)), bits)


def _top_indices(values, count):
  """Indices (int32, any order) of the `count` largest entries of 1-D `values`.

  Exact, with ties going to the lower index, like `tf.math.top_k`, but in
  O(N): one histogram pass over the top bits of the values finds the bucket
  that holds the count-th largest; everything above it is taken, and a top_k
  runs only inside that bucket.
  """
  size = values.shape[0]
  if size is not None and size < _SMALL:
    return tf.math.top_k(values, k=count, sorted=False).indices
  buckets = 1 << _RADIX_BITS
  bucket = tf.bitwise.right_shift(_order_keys(values), 32 - _RADIX_BITS) + buckets // 2
  histogram = tf.math.bincount(bucket, minlength=buckets, maxlength=buckets)
  at_or_above = tf.cumsum(histogram, reverse=True)
  # The highest bucket whose entries and those above reach `count`.
  boundary = tf.reduce_sum(tf.cast(at_or_above >= count, tf.int32)) - 1
  above = bucket > boundary
  taken = tf.cast(tf.where(above)[:, 0], tf.int32)
  inside = tf.cast(tf.where(tf.equal(bucket, boundary))[:, 0], tf.int32)
  rest = count - tf.shape(taken)[0]
  best = tf.math.top_k(tf.gather(values, inside), k=rest, sorted=False).indices
  return tf.concat([taken, tf.gather(inside, best)], axis=0)


def _positions(scores, eligible, count, max_count, few_eligible=False):
  """Boolean [N] marking the `count` eligible entries with the largest scores.

  Uses a partial selection (top_k), never a full sort. `max_count` is a static
  bound on `count` (an int) or None to select exactly `count` (dynamic shape).
  With `few_eligible` (and no static bound) the eligible entries are gathered
  first, so the selection runs over them only (drop: the active weights).
  Ties go to the lower flat index.
  """
  size = tf.shape(scores)[0]
  if max_count is None and few_eligible:
    where = tf.where(eligible)[:, 0]
    index = tf.gather(tf.cast(where, tf.int32), _top_indices(tf.gather(scores, where), count))
    picked = tf.scatter_nd(index[:, None], tf.ones_like(index, tf.int32), [size])
    return picked > 0
  lowest = tf.fill(tf.shape(scores), tf.constant(-float("inf"), scores.dtype))
  candidates = tf.where(eligible, scores, lowest)
  if max_count is None:
    index = _top_indices(candidates, count)
    valid = tf.ones_like(index, tf.int32)
  else:
    # Static k: take the best max_count in order, keep the first `count`.
    k = tf.minimum(int(max_count), size)
    _, index = tf.math.top_k(candidates, k=k, sorted=True)
    valid = tf.cast(tf.range(tf.shape(index)[0]) < count, tf.int32)
  picked = tf.scatter_nd(index[:, None], valid, [size])
  return picked > 0


def drop_count(n_active, drop_fraction):
  """``floor(n_active * drop_fraction)`` computed the way the authors' code does.

  The authors' TF1 and TF2 code (``generic_mask_update`` in google-research/rigl)
  computes ``int32(float32(n_ones) * float32(drop_fraction))``; we do the same,
  so 90 active x 0.7 gives 63 (a float64 product gives 62). Float32 rounding
  can also land below the exact value: 100 x 0.53 gives 52 there and here
  (exact arithmetic: 53). The result is clipped to [0, n_active].

  Args:
    n_active: int or int32 scalar tensor.
    drop_fraction: float or scalar tensor in [0, 1].

  Example:
  >>> int(drop_count(90, 0.7))
  63
  """
  n_active = tf.cast(n_active, tf.int32)
  # float64 first, so a Python float is rounded to float32 only once.
  fraction = tf.cast(tf.cast(
      tf.convert_to_tensor(drop_fraction, dtype_hint=tf.float64), tf.float64), tf.float32)
  n_drop = tf.cast(tf.cast(n_active, tf.float32) * fraction, tf.int32)
  return tf.clip_by_value(n_drop, 0, n_active)


def finite_scores(scores):
  """Float32 scores with NaN -> lowest finite value, +-Inf -> +-largest finite.

  Non-eligible entries get -Inf in `_positions`; after this mapping every
  eligible entry ranks above them, so the selected count is always exact.
  Both storages (these masks and `keras_rigl.layers.update`) rank through it.

  Example:
  >>> finite_scores([1.0, float("nan"), float("inf")]).numpy().tolist()[:2]
  [1.0, -3.4028234663852886e+38]
  """
  big = tf.constant(tf.float32.max, tf.float32)
  scores = tf.cast(scores, tf.float32)
  scores = tf.where(tf.math.is_nan(scores), -big, scores)
  return tf.clip_by_value(scores, -big, big)


def _drop_positions(drop_scores, active, count, max_count):
  """Boolean [N]: the `count` active entries with the smallest drop score.

  Tie rule (the one place it is decided): among equal drop scores the entry
  with the HIGHER flat index is dropped, as in the authors' TF2/TF1 code,
  which sorts all scores with ``tf.math.top_k`` (ties to the lower index) and
  keeps the first ``n_keep``. One difference remains: the authors rank
  inactive positions (score 0) together with the active ones, so an active
  weight that is exactly 0 can lose its place to an inactive position of lower
  index; here only active entries compete, so the kept set is always a subset
  of the active one.
  """
  # Selection breaks ties to the lower index: run it on the reversed order.
  picked = _positions(tf.reverse(-finite_scores(drop_scores), [0]),
                      tf.reverse(active, [0]), count, max_count, few_eligible=True)
  return tf.reverse(picked, [0])


def _flat_scores(active, weights, grow_scores, drop_scores):
  """Flat float32 weights, finite grow scores and drop scores (default |W * M|)."""
  weights = tf.reshape(tf.cast(weights, tf.float32), [-1])
  grow_scores = finite_scores(tf.reshape(tf.cast(grow_scores, tf.float32), [-1]))
  if drop_scores is None:
    drop_scores = tf.abs(tf.where(active, weights, tf.zeros_like(weights)))
  else:
    drop_scores = tf.reshape(tf.cast(drop_scores, tf.float32), [-1])
  return weights, grow_scores, drop_scores


def update_mask(mask, weights, grow_scores, drop_fraction, drop_scores=None,
                max_update=None, grow_count=None, min_fan_in=0, n_drop=None):
  """One RigL drop/grow step on a single mask.

  Drops the ``n_drop = drop_count(n_active, drop_fraction)`` active
  connections with the smallest drop score (default ``|weights * mask|``; ties:
  the higher flat index goes, see `_drop_positions`) and grows exactly as many
  among all positions that were not kept (a just-dropped connection may come
  back), choosing those with the largest grow score (ties: the lower flat
  index). The number of ones never changes, whatever the scores hold: NaN
  scores rank lowest, +-Inf like the largest finite values.

  Args:
    mask: 0/1 tensor.
    weights: weight tensor of the same shape.
    grow_scores: tensor of the same shape (RigL: |dL/dW|; SET: random).
    drop_fraction: float or scalar tensor in [0, 1].
    drop_scores: optional tensor of the same shape; default |weights * mask|.
    max_update: optional static int bound on the number of connections that
      move; makes every shape static (XLA/TPU). Must be >= the real count.
    grow_count: optional int (or int32 scalar tensor) number of connections to
      grow instead of ``n_drop`` (layer-wise redistribution: SNFS, RigL with
      `redistribution`); clipped to the positions that are not kept. The
      number of ones then changes by ``grow_count - n_drop``. Not with
      `max_update`.
    min_fan_in: int >= 0; if > 0, the update keeps output units (last axis)
      connected as `min_fan_in_update` describes (not with `max_update`).
    n_drop: optional int (or int scalar tensor) number of connections to drop
      instead of ``drop_count(n_active, drop_fraction)`` (layer-wise
      redistribution moves counts through the drop: see
      `keras_rigl.redistribution.redistributed_drops`); clipped to
      ``[0, n_active]``. Not with `max_update` or `min_fan_in`.

  Returns:
    (new_mask, grown): new_mask has mask's dtype; grown is a boolean tensor,
    True where new_mask is 1 and mask was 0.

  Example:
  >>> mask = tf.constant([1., 1., 0., 0.])
  >>> w = tf.constant([0.1, 2.0, 0., 0.])
  >>> g = tf.constant([0., 0., 5., 1.])
  >>> new_mask, grown = update_mask(mask, w, g, 0.5)
  >>> new_mask.numpy().tolist()
  [0.0, 1.0, 1.0, 0.0]
  """
  mask, weights, grow_scores, drop_scores = _check_update_inputs(
      mask, weights, grow_scores, drop_fraction, drop_scores)
  if check_min_fan_in(min_fan_in):
    if grow_count is not None:
      raise ValueError(
          f"min_fan_in={min_fan_in} cannot be combined with grow_count (layer-wise "
          "redistribution) yet; use min_fan_in=0 with redistribution, or no "
          "redistribution with min_fan_in.")
    if n_drop is not None:
      raise ValueError(
          f"min_fan_in={min_fan_in} cannot be combined with n_drop (layer-wise "
          "redistribution) yet; use one of them.")
    if max_update is not None:
      raise ValueError(
          f"min_fan_in={min_fan_in} works with dynamic shapes only, not with "
          f"max_update={max_update} (static shapes: TPUStrategy or static_shapes=True). "
          "Use min_fan_in=0 there.")
    return min_fan_in_update(mask, weights, grow_scores, drop_fraction, min_fan_in,
                             drop_scores)
  mask = tf.convert_to_tensor(mask)
  shape = tf.shape(mask)
  active = tf.reshape(mask, [-1]) > 0
  weights, grow_scores, drop_scores = _flat_scores(active, weights, grow_scores,
                                                   drop_scores)
  n_active = tf.reduce_sum(tf.cast(active, tf.int32))
  if n_drop is None:
    n_drop = drop_count(n_active, drop_fraction)
  else:
    if max_update is not None:
      raise ValueError("update_mask: n_drop and max_update cannot be combined; "
                       "pass one of them.")
    n_drop = tf.clip_by_value(tf.cast(n_drop, tf.int32), 0, n_active)
  dropped = _drop_positions(drop_scores, active, n_drop, max_update)
  kept = tf.logical_and(active, tf.logical_not(dropped))
  # Grow: the n_drop best of everything not kept (dropped ones included).
  n_grow = n_drop
  if grow_count is not None:
    if max_update is not None:
      raise ValueError("update_mask: grow_count and max_update cannot be combined; "
                       "pass one of them.")
    free = tf.size(kept) - (n_active - n_drop)
    n_grow = tf.clip_by_value(tf.cast(grow_count, tf.int32), 0, free)
  grown_positions = _positions(grow_scores, tf.logical_not(kept), n_grow, max_update)
  new_active = tf.logical_or(kept, grown_positions)
  grown = tf.logical_and(new_active, tf.logical_not(active))
  new_mask = tf.reshape(tf.cast(new_active, mask.dtype), shape)
  return new_mask, tf.reshape(grown, shape)


def _check_update_inputs(mask, weights, grow_scores, drop_fraction, drop_scores):
  """Tensors of one shape and a fraction in [0, 1], or an error naming the argument."""
  tensors = []
  for name, value in (("mask", mask), ("weights", weights), ("grow_scores", grow_scores),
                      ("drop_scores", drop_scores)):
    if value is None and name == "drop_scores":
      tensors.append(None)
      continue
    if value is None or isinstance(value, (str, bytes)):
      raise TypeError(f"update_mask: {name} must be a tensor (or array) of the mask's "
                      f"shape, got {value!r}.")
    try:
      tensor = tf.convert_to_tensor(value)
    except (TypeError, ValueError) as error:
      raise TypeError(f"update_mask: {name} must be a tensor (or array) of the mask's "
                      f"shape, got {type(value).__name__} ({error}).") from None
    if not (tensor.dtype.is_floating or tensor.dtype.is_integer or tensor.dtype.is_bool):
      raise TypeError(f"update_mask: {name} must hold numbers, got dtype {tensor.dtype.name}.")
    tensors.append(tensor)
  shape = tensors[0].shape
  for name, tensor in zip(("weights", "grow_scores", "drop_scores"), tensors[1:]):
    if tensor is not None and not tensor.shape.is_compatible_with(shape):
      raise ValueError(f"update_mask: {name} has shape {tensor.shape.as_list()} but the "
                       f"mask has shape {shape.as_list()}; pass one value per mask "
                       "position (same shape).")
  if isinstance(drop_fraction, (str, bytes)) or drop_fraction is None:
    raise TypeError(f"update_mask: drop_fraction must be a number in [0, 1], got "
                    f"{drop_fraction!r}; e.g. 0.3.")
  if isinstance(drop_fraction, numbers.Real) and not (
      0.0 <= float(drop_fraction) <= 1.0):
    raise ValueError(f"update_mask: drop_fraction must be in [0, 1] (the fraction of "
                     f"active connections that move), got {drop_fraction!r}; e.g. 0.3.")
  return tensors


def check_min_fan_in(min_fan_in, owner=""):
  """`min_fan_in` as an int >= 0, or ValueError naming it and the fix.

  Example:
  >>> check_min_fan_in(2)
  2
  """
  if (isinstance(min_fan_in, bool) or not isinstance(min_fan_in, numbers.Integral)
      or min_fan_in < 0):
    raise ValueError(
        f"{owner}min_fan_in must be an integer >= 0 (the fewest active inputs every "
        f"output unit keeps; 0 = no minimum), got {min_fan_in!r}; pass e.g. min_fan_in=1.")
  return int(min_fan_in)


def _unit_view(shape):
  """(n_rows, n_cols) of a weight whose last axis holds the output units."""
  shape = tf.TensorShape(shape)
  if not shape.is_fully_defined() or shape.rank == 0:
    raise ValueError(f"min_fan_in needs a mask of known shape with at least one axis "
                     f"(the last axis holds the output units), got shape {shape}.")
  n_cols = int(shape[-1])
  return shape.num_elements() // max(n_cols, 1), n_cols


def _protected(drop_scores, active, n_rows, n_cols, floor):
  """Boolean [N]: each unit's `floor` active inputs of largest drop score.

  Ties keep the lower row (the lower flat index), as the drop's tie rule does.
  """
  lowest = tf.constant(-float("inf"), tf.float32)
  ranked = tf.where(active, finite_scores(drop_scores), lowest)
  by_unit = tf.transpose(tf.reshape(ranked, [n_rows, n_cols]))  # [units, rows]
  rows = tf.math.top_k(by_unit, k=floor, sorted=False).indices
  flat = tf.reshape(rows * n_cols + tf.range(n_cols)[:, None], [-1, 1])
  picked = tf.scatter_nd(flat, tf.ones([n_cols * floor], tf.int32), [n_rows * n_cols])
  return tf.logical_and(picked > 0, active)


def _fill_counts(fan_in, floor, budget):
  """Per unit, how many inputs to grow so units reach `floor`, within `budget`.

  Water-filling, neediest first: a unit at fan-in f needs the levels f,
  f + 1, ..., floor - 1; levels are filled from the lowest up, every unit
  at one level before any unit at the next, and a level that the budget
  cannot finish goes to the lowest unit indices.
  """
  need = tf.maximum(floor - fan_in, 0)
  levels = tf.range(floor + 1)[:, None]
  # below[L]: fills that bring every unit up to level L (or its need).
  below = tf.reduce_sum(tf.minimum(tf.maximum(levels - fan_in[None], 0), need[None]), 1)
  level = tf.reduce_sum(tf.cast(below <= budget, tf.int32)) - 1
  base = tf.minimum(tf.maximum(level - fan_in, 0), need)
  rest = budget - tf.gather(below, level)
  at_level = tf.logical_and(fan_in <= level, level < floor)
  extra = tf.logical_and(at_level, tf.cumsum(tf.cast(at_level, tf.int32)) <= rest)
  return base + tf.cast(extra, tf.int32)


def _fill_positions(grow_scores, free, fills, n_rows, n_cols, floor):
  """Boolean [N]: in each unit, its `fills` best-scoring `free` positions."""
  lowest = tf.constant(-float("inf"), tf.float32)
  ranked = tf.where(free, grow_scores, lowest)
  by_unit = tf.transpose(tf.reshape(ranked, [n_rows, n_cols]))
  units = tf.cast(tf.where(fills > 0)[:, 0], tf.int32)  # Usually few.
  rows = tf.math.top_k(tf.gather(by_unit, units), k=floor, sorted=True).indices
  valid = tf.range(floor)[None, :] < tf.gather(fills, units)[:, None]
  flat = tf.reshape(rows * n_cols + units[:, None], [-1, 1])
  picked = tf.scatter_nd(flat, tf.reshape(tf.cast(valid, tf.int32), [-1]),
                         [n_rows * n_cols])
  return picked > 0


def min_fan_in_update(mask, weights, grow_scores, drop_fraction, min_fan_in,
                      drop_scores=None):
  """`update_mask` that keeps every output unit at >= `min_fan_in` active inputs.

  Output units are the last axis of the mask (a Dense kernel's columns, a
  convolution's output channels); a unit's possible inputs are the entries of
  its slice. The minimum is ``floor = min(min_fan_in, n_rows, n_active //
  n_units)``: a larger `min_fan_in` is clamped, not refused, to what every
  unit can have at once (a layer with fewer ones than ``units * min_fan_in``
  would otherwise be frozen, every connection protected, and could never
  repair a unit without inputs). The rule:

  1. Drop: as `update_mask`, but a unit's ``floor`` active connections of
     largest drop score (default |W|; ties keep the lower index) are never
     dropped. If fewer than ``n_drop`` connections may go, only those move.
  2. Fill: units still below ``floor`` (they had fewer active inputs before
     the update) grow their best-scoring inactive inputs first (grow score,
     ties to the lower index). These count against the ``n_drop`` growth, so
     the number of ones never changes; when the budget is smaller than the
     deficit, the neediest units are filled first (all units at fan-in 0 to 1,
     then 1 to 2, ...; within a level the lower unit index first).
  3. Grow: the rest of the ``n_drop`` as `update_mask` grows them.

  A unit reconnected in step 2 gets ``grow_init`` weights; with zeros and a
  ReLU whose bias is <= 0 it still receives no gradient, so step 1 (never
  losing the last inputs) is what keeps units alive in practice. Units at
  the minimum keep all their connections, so a `min_fan_in` close to
  ``n_active / n_units`` leaves little to move: RigL then barely updates
  that layer.

  Args:
    mask, weights, grow_scores, drop_fraction, drop_scores: as `update_mask`
      (shapes must be known).
    min_fan_in: int >= 0; 0 gives exactly `update_mask`'s result.

  Returns:
    (new_mask, grown), as `update_mask`.

  Example:
  >>> mask = tf.constant([[1., 1.], [1., 0.], [0., 0.]])   # unit 1: one input
  >>> w = tf.constant([[0.5, 0.1], [0.9, 0.], [0., 0.]])
  >>> g = tf.constant([[0., 0.], [0., 0.], [3., 0.]])
  >>> update_mask(mask, w, g, 0.4)[0].numpy().tolist()   # unit 1 loses it
  [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]
  >>> min_fan_in_update(mask, w, g, 0.4, 1)[0].numpy().tolist()
  [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]
  """
  min_fan_in = check_min_fan_in(min_fan_in)
  mask = tf.convert_to_tensor(mask)
  n_rows, n_cols = _unit_view(mask.shape)
  if min(min_fan_in, n_rows) == 0:
    return update_mask(mask, weights, grow_scores, drop_fraction, drop_scores)
  active = tf.reshape(mask, [-1]) > 0
  n_active = tf.reduce_sum(tf.cast(active, tf.int32))
  # What every unit can have at once (int32 scalar tensor).
  floor = tf.minimum(min(min_fan_in, n_rows), n_active // n_cols)
  weights, grow_scores, drop_scores = _flat_scores(active, weights, grow_scores,
                                                   drop_scores)
  droppable = tf.logical_and(
      active, tf.logical_not(_protected(drop_scores, active, n_rows, n_cols, floor)))
  n_drop = tf.minimum(drop_count(n_active, drop_fraction),
                      tf.reduce_sum(tf.cast(droppable, tf.int32)))
  dropped = _drop_positions(drop_scores, droppable, n_drop, None)
  kept = tf.logical_and(active, tf.logical_not(dropped))
  fan_in = tf.reduce_sum(tf.reshape(tf.cast(kept, tf.int32), [n_rows, n_cols]), 0)
  fills = _fill_counts(fan_in, floor, n_drop)
  filled = _fill_positions(grow_scores, tf.logical_not(kept), fills, n_rows, n_cols,
                           floor)
  free = tf.logical_not(tf.logical_or(kept, filled))
  grown_rest = _positions(grow_scores, free, n_drop - tf.reduce_sum(fills), None)
  new_active = tf.logical_or(tf.logical_or(kept, filled), grown_rest)
  grown = tf.logical_and(new_active, tf.logical_not(active))
  new_mask = tf.reshape(tf.cast(new_active, mask.dtype), tf.shape(mask))
  return new_mask, tf.reshape(grown, tf.shape(mask))


def prune_mask(mask, weights, sparsity, max_update=None):
  """Magnitude pruning: keep the ``N - floor(sparsity * N)`` largest |W * M|.

  Connections already pruned stay pruned (only active ones compete), so the
  mask only loses ones; if it already has fewer ones it is returned unchanged.
  Same tie rule as `update_mask`'s drop (equal |W|: the higher index goes).

  Example:
  >>> prune_mask(tf.ones([4]), tf.constant([0.1, -3., 2., 0.5]), 0.5).numpy().tolist()
  [0.0, 1.0, 1.0, 0.0]
  """
  mask = tf.convert_to_tensor(mask)
  shape = tf.shape(mask)
  active = tf.reshape(mask, [-1]) > 0
  size = tf.size(active)
  sparsity = tf.cast(tf.convert_to_tensor(sparsity, dtype_hint=tf.float64), tf.float64)
  n_keep = size - tf.cast(tf.floor(sparsity * tf.cast(size, tf.float64)), tf.int32)
  n_active = tf.reduce_sum(tf.cast(active, tf.int32))
  n_drop = tf.maximum(n_active - n_keep, 0)
  scores = tf.abs(tf.reshape(tf.cast(weights, tf.float32), [-1]))
  dropped = _drop_positions(scores, active, n_drop, max_update)
  kept = tf.logical_and(active, tf.logical_not(dropped))
  return tf.reshape(tf.cast(kept, mask.dtype), shape)
