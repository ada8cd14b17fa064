"""Layer-wise redistribution: how layer counts move at a mask update.

Sparse momentum (SNFS, Dettmers & Zettlemoyer, 2019) and RigL with
``redistribution=`` move connections between layers in proportion to a
per-layer statistic (mean ``|momentum|`` or mean ``|gradient|`` over the
layer's active weights), so that layers whose weights matter more to the loss
become denser while the total number of weights stays exactly the same.

`redistribute` computes a proportional split in plain TensorFlow ops (runs
eagerly or inside the scheduler's compiled update, identical on every
replica). `redistributed_drops` is what the schedulers call: every layer
regrows exactly what it was due to drop (``drop_count(n_active,
drop_fraction)``, as without redistribution), and the counts move through
the drop: a favoured layer drops fewer of its weights, a disfavoured one more
of its smallest, each within bounds set by its drop (a layer's count changes
by at most ``+n_drop / 4`` and ``-n_drop / 4`` per update), the total exact.
`bounded_regrowth` is the earlier form of the same split (the count changes
made by regrowing more or fewer than the drop); its numbers are the net
changes `redistributed_drops` makes.

Why the bounds. Left unbounded, the split follows the *mean* statistic per
weight, which does not depend on a layer's size: a small layer with large
gradients (LeNet-5's first convolution: 25 active weights of 500 at 95%
uniform sparsity, mean ``|momentum|`` about 10x that of the others) is
handed most of the total at once. In the collapse the bounds were added for
(LeNet-5, Fashion-MNIST, 95% uniform, momentum redistribution, tf_keras,
seed 1), the update at step 100 made conv1 dense (25 -> 500 weights) and the
logits 15x denser (250 -> 3737); with the paper's learning rate (0.1,
Nesterov momentum 0.9) the loss jumped to 4.2 at step 119, the ReLUs died
and the model stayed at chance.

Why through the drop. With the bounds alone (each layer regrowing between
0.75x and 1.25x its drop) held-out LeNet-5 seeds 7 and 9 still collapsed,
while their runs without redistribution did not. Step by step they match the
run without redistribution (same separate-data grow scores) bit for bit up to
the first update with a statistic (step 100); the counts then differ by a
few weights, but at every update the favoured layers (conv1, conv2, logits:
largest mean ``|momentum|``) regrew 25% more *new* connections, zero-valued,
at the positions of largest gradient, with their momentum reset. Those are
the weights SGD moves most in the next steps: after the update at step 200
conv1's mean ``|W|`` went 0.17 -> 0.41 in 10 steps (0.17 -> 0.25 without
redistribution), the loss 0.78 -> 4.3, and conv1's last live ReLUs died (seed
9; seed 7 the same at steps 200 and 300). Moving the counts through the drop
keeps the count changes but makes each update's new connections per layer
exactly those of the run without redistribution (a favoured layer keeps
trained weights instead of growing extra untrained ones): seeds 7 and 9 then
train (82.22 and 84.85). docs/baselines.md has the seed tables.
"""

import math

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



# Per update a layer's count moves up by at most (GROWTH_BOUND - 1) times, and
# down by at most (1 - KEEP_BOUND) times, its drop at that update (see the
# module docstring).
GROWTH_BOUND = 1.25
KEEP_BOUND = 0.75


def bounded_regrowth(dropped, statistics, free, growth=GROWTH_BOUND, keep=KEEP_BOUND):
  """Splits ``sum(dropped)`` regrown connections over layers, each within bounds.

  Layer ``l`` dropped ``dropped[l]`` connections and has ``free[l]``
  positions it may grow into (at least ``dropped[l]``: the just-dropped ones
  count). It regrows at least ``ceil(keep * dropped[l])`` and at most
  ``min(floor(growth * dropped[l]), free[l])``; what lies between goes by
  `redistribute` (proportional to `statistics`, overflow to layers with
  room). The counts sum to exactly ``sum(dropped)``: the lower bounds sum to
  no more than it (``keep <= 1``) and the upper bounds to no less
  (``growth >= 1``), so the total number of active connections never moves.
  If no statistic is finite and positive, every layer regrows what it
  dropped.

  Args:
    dropped: int [L] tensor, connections each layer dropped at this update.
    statistics: float [L] tensor, one non-negative statistic per layer.
    free: int [L] tensor, the most each layer can regrow.
    growth: float >= 1, the largest regrowth as a multiple of the drop.
    keep: float in [0, 1], the smallest regrowth as a multiple of the drop.

  Returns:
    int64 [L] tensor of regrowth counts.

  Example (the first layer's statistic is 10x the others'; unbounded it
  would take 833 of the 1000):

  >>> bounded_regrowth([100, 100, 800], [10.0, 1.0, 1.0], [500, 900, 9000]).numpy().tolist()
  [125, 125, 750]
  >>> redistribute(1000, [10.0, 1.0, 1.0], [500, 900, 9000]).numpy().tolist()
  [500, 250, 250]
  """
  if not (isinstance(growth, (int, float)) and math.isfinite(growth) and growth >= 1.0):
    raise ValueError(f"bounded_regrowth: growth must be a number >= 1 (a layer may "
                     f"regrow up to growth x what it dropped), got {growth!r}.")
  if not (isinstance(keep, (int, float)) and 0.0 <= keep <= 1.0):
    raise ValueError(f"bounded_regrowth: keep must be in [0, 1] (a layer regrows at "
                     f"least keep x what it dropped), got {keep!r}.")
  dropped = tf.maximum(tf.cast(tf.convert_to_tensor(dropped), tf.int64), 0)
  free = tf.maximum(tf.cast(tf.convert_to_tensor(free), tf.int64), dropped)
  as_float = tf.cast(dropped, tf.float64)
  low = tf.cast(tf.math.ceil(keep * as_float), tf.int64)
  high = tf.minimum(tf.cast(tf.floor(growth * as_float), tf.int64), free)
  high = tf.maximum(high, dropped)
  total = tf.reduce_sum(dropped)
  counts = low + redistribute(total - tf.reduce_sum(low), statistics, high - low)
  # No usable statistic at all: nothing to move counts by.
  stats = tf.cast(tf.convert_to_tensor(statistics), tf.float64)
  informative = tf.reduce_any(tf.math.is_finite(stats) & (stats > 0))
  return tf.where(informative, counts, dropped)


def redistributed_drops(dropped, statistics, active, sizes, growth=GROWTH_BOUND,
                        keep=KEEP_BOUND):
  """How many connections each layer drops when it regrows its nominal drop.

  The rule the schedulers use (see the module docstring): layer ``l`` was due
  to drop ``dropped[l]`` connections (``drop_count(active[l],
  drop_fraction)``) and regrows exactly ``dropped[l]``, as without
  redistribution; the layer counts move through the drop instead. A layer
  that the statistic favours drops fewer (it keeps some of the weights it
  would have dropped), one it disfavours drops more (its smallest weights),
  so a layer's count changes by ``dropped[l] - drops[l]``, between
  ``-(dropped[l] - ceil(keep * dropped[l]))`` and
  ``+(floor(growth * dropped[l]) - dropped[l])``: the same net change, split
  the same way, as `bounded_regrowth` gives, but no layer ever grows more new
  (zero-initialised, largest-gradient) connections than it would without
  redistribution. The drops sum to exactly ``sum(dropped)``, so the total
  number of active connections never moves. A layer never drops more than it
  has (``drops <= active``), nor fewer than none (a gain is at most the
  drop, whatever `growth`), nor gains more than its free positions
  (``drops >= dropped - (sizes - active)``). If no statistic is finite and
  positive, every layer drops ``dropped``.

  Args:
    dropped: int [L] tensor, each layer's nominal drop (and regrowth).
    statistics: float [L] tensor, one non-negative statistic per layer.
    active: int [L] tensor, each layer's active connections before the update.
    sizes: int [L] tensor, each layer's number of positions.
    growth: float >= 1, the largest count change up, as a multiple of the drop
      (``growth - 1`` times the drop).
    keep: float in [0, 1], bounds the largest count change down (``1 - keep``
      times the drop).

  Returns:
    int64 [L] tensor of drop counts.

  Example (the first layer's statistic is 10x the others'): it keeps 25 of the
  100 it was due to drop, the last layer gives them up.

  >>> redistributed_drops([100, 100, 800], [10.0, 1.0, 1.0], [400, 400, 3200],
  ...                     [500, 900, 9000]).numpy().tolist()
  [75, 75, 850]
  """
  if not (isinstance(growth, (int, float)) and math.isfinite(growth) and growth >= 1.0):
    raise ValueError(f"redistributed_drops: growth must be a number >= 1 (a layer may "
                     f"gain up to (growth - 1) x its drop), got {growth!r}.")
  if not (isinstance(keep, (int, float)) and 0.0 <= keep <= 1.0):
    raise ValueError(f"redistributed_drops: keep must be in [0, 1] (a layer may lose "
                     f"up to (1 - keep) x its drop), got {keep!r}.")
  active = tf.maximum(tf.cast(tf.convert_to_tensor(active), tf.int64), 0)
  dropped = tf.clip_by_value(tf.cast(tf.convert_to_tensor(dropped), tf.int64), 0, active)
  sizes = tf.maximum(tf.cast(tf.convert_to_tensor(sizes), tf.int64), active)
  as_float = tf.cast(dropped, tf.float64)
  # Most a layer may shrink / grow by at this update.
  shrink = tf.minimum(dropped - tf.cast(tf.math.ceil(keep * as_float), tf.int64),
                      active - dropped)
  # (It cannot drop fewer than none: with growth > 2 the gain stops at the drop.)
  gain = tf.minimum(tf.minimum(tf.cast(tf.floor(growth * as_float), tf.int64) - dropped,
                               sizes - active), dropped)
  shrink, gain = tf.maximum(shrink, 0), tf.maximum(gain, 0)
  # Every layer starts at its largest shrink; what that frees (sum(shrink))
  # goes back by the statistic, each layer up to its largest gain.
  back = redistribute(tf.reduce_sum(shrink), statistics, shrink + gain)
  drops = dropped + shrink - back
  stats = tf.cast(tf.convert_to_tensor(statistics), tf.float64)
  informative = tf.reduce_any(tf.math.is_finite(stats) & (stats > 0))
  return tf.where(informative, drops, dropped)
