"""Layer-wise redistribution: the split of a regrown total over layers (pure TF)."""

import numpy as np
import pytest
import tensorflow as tf

from keras_rigl.masks import update_mask
from keras_rigl.redistribution import (bounded_regrowth, mean_abs_over_active, redistribute,
                                       redistributed_drops)


def split(total, stats, caps):
  return redistribute(total, stats, caps).numpy().tolist()


def test_proportional_split_is_exact():
  assert split(10, [3.0, 1.0, 1.0], [100, 100, 100]) == [6, 2, 2]
  assert split(12, [1.0, 1.0, 1.0, 1.0], [9, 9, 9, 9]) == [3, 3, 3, 3]
  # 7 * (0.5, 0.3, 0.2) = 3.5, 2.1, 1.4: floors 3, 2, 1; the one left goes to
  # the largest fractional part (0.5).
  assert split(7, [5.0, 3.0, 2.0], [50, 50, 50]) == [4, 2, 1]


def test_overflow_goes_to_layers_with_room():
  # The first layer wants 6 but has room for 2: the others share the 4 extra.
  assert split(10, [3.0, 1.0, 1.0], [2, 100, 100]) == [2, 4, 4]
  # Cascading: the second layer fills up as well once it gets the overflow.
  assert split(20, [10.0, 5.0, 1.0], [3, 5, 100]) == [3, 5, 12]
  # More asked than there is room: every layer full, nothing more.
  assert split(100, [1.0, 1.0], [3, 4]) == [3, 4]


def test_zero_and_non_finite_statistics():
  # All zero: an even split over the layers with room.
  assert split(7, [0.0, 0.0, 0.0], [1, 5, 5]) == [1, 3, 3]
  # NaN / Inf / negative count as 0: everything goes to the finite layer.
  assert split(6, [float("nan"), 2.0, float("inf"), -1.0], [9, 9, 9, 9]) == [0, 6, 0, 0]
  assert split(0, [1.0, 2.0], [5, 5]) == [0, 0]


def test_random_cases_keep_the_total_and_the_capacities():
  rng = np.random.default_rng(0)
  for _ in range(60):
    layers = int(rng.integers(1, 7))
    caps = rng.integers(0, 40, layers)
    stats = rng.exponential(size=layers) * (rng.random(layers) > 0.2)
    total = int(rng.integers(0, caps.sum() + 3))
    counts = redistribute(total, stats, caps).numpy()
    assert counts.sum() == min(total, caps.sum())
    assert np.all(counts >= 0) and np.all(counts <= caps)


def test_runs_inside_tf_function():
  fn = tf.function(lambda t, s, c: redistribute(t, s, c))
  counts = fn(tf.constant(10, tf.int32), tf.constant([3.0, 1.0, 1.0]),
              tf.constant([2, 100, 100]))
  assert counts.numpy().tolist() == [2, 4, 4]


def bounded(dropped, stats, free, **kwargs):
  return bounded_regrowth(dropped, stats, free, **kwargs).numpy().tolist()


def test_bounded_regrowth_limits_each_layer_to_its_drop():
  # LeNet-5's collapse in small: a 25-weight layer with a 10x larger mean
  # statistic. Unbounded it takes everything it has room for in one update.
  dropped, stats, free = [7, 375, 6000, 75], [1.3e-3, 1e-4, 1.7e-5, 1.9e-4], [482, 24125, 386000, 4825]
  assert redistribute(sum(dropped), stats, free).numpy().tolist()[0] == 482
  counts = bounded(dropped, stats, free)
  assert sum(counts) == sum(dropped)
  assert counts[0] == 8 and counts[3] == 93  # 1.25x their drop: the upper bound.
  assert counts[2] >= 4500  # At least 0.75x its drop: the lower bound.
  # No statistic (all zero / NaN): each layer regrows what it dropped.
  assert bounded([10, 20, 30], [0.0, float("nan"), 0.0], [100, 100, 100]) == [10, 20, 30]
  assert bounded([0, 0], [1.0, 2.0], [5, 5]) == [0, 0]


def test_bounded_regrowth_random_cases_are_exact_and_within_bounds():
  rng = np.random.default_rng(1)
  for _ in range(60):
    layers = int(rng.integers(1, 7))
    dropped = rng.integers(0, 30, layers)
    free = dropped + rng.integers(0, 40, layers)
    stats = rng.exponential(size=layers) * (rng.random(layers) > 0.2)
    growth, keep = float(rng.uniform(1, 3)), float(rng.uniform(0, 1))
    counts = bounded_regrowth(dropped, stats, free, growth=growth, keep=keep).numpy()
    assert counts.sum() == dropped.sum()
    assert np.all(counts >= np.ceil(keep * dropped))
    assert np.all(counts <= np.maximum(np.minimum(np.floor(growth * dropped), free), dropped))


def test_bounded_regrowth_in_tf_function_and_bad_bounds():
  fn = tf.function(lambda d, s, f: bounded_regrowth(d, s, f))
  counts = fn(tf.constant([4, 4], tf.int32), tf.constant([1.0, 0.0], tf.float64),
              tf.constant([50, 50], tf.int32))
  assert counts.numpy().tolist() == [5, 3]
  with pytest.raises(ValueError, match="growth must be a number >= 1"):
    bounded_regrowth([1], [1.0], [1], growth=0.5)
  with pytest.raises(ValueError, match=r"keep must be in \[0, 1\]"):
    bounded_regrowth([1], [1.0], [1], keep=1.5)


def test_mean_abs_over_active():
  value = mean_abs_over_active(tf.constant([[1.0, -3.0], [5.0, float("inf")]]),
                               tf.constant([[1.0, 1.0], [0.0, 0.0]]))
  assert float(value) == 2.0
  assert float(mean_abs_over_active(tf.ones([3]), tf.zeros([3]))) == 0.0


def test_update_mask_grow_count():
  mask = tf.constant([1., 1., 1., 1., 0., 0., 0., 0.])
  w = tf.constant([0.1, 0.2, 3.0, 4.0, 0., 0., 0., 0.])
  g = tf.constant([0., 0., 0., 0., 5., 1., 4., 3.])
  # Drop 2 (0.1, 0.2), grow 3: the largest scores among the 6 not kept.
  new, grown = update_mask(mask, w, g, 0.5, grow_count=3)
  assert new.numpy().tolist() == [0., 0., 1., 1., 1., 0., 1., 1.]
  assert grown.numpy().tolist() == [False] * 4 + [True, False, True, True]
  # Grow fewer than dropped: the layer shrinks.
  new, _ = update_mask(mask, w, g, 0.5, grow_count=1)
  assert new.numpy().tolist() == [0., 0., 1., 1., 1., 0., 0., 0.]
  # Clipped to the free positions.
  new, _ = update_mask(mask, w, g, 0.5, grow_count=50)
  assert new.numpy().sum() == 8
  with pytest.raises(ValueError, match="grow_count and max_update"):
    update_mask(mask, w, g, 0.5, grow_count=2, max_update=4)


def drops_of(dropped, stats, active, sizes, **kwargs):
  return redistributed_drops(dropped, stats, active, sizes, **kwargs).numpy().tolist()


def test_redistributed_drops_move_counts_through_the_drop():
  # LeNet-5 at 95% uniform (conv1, conv2, fc1, logits) at the first update
  # with a statistic: conv1, conv2 and logits are favoured, fc1 pays.
  dropped, active = [7, 366, 5867, 73], [25, 1250, 20000, 250]
  sizes, stats = [500, 25000, 400000, 5000], [7.5e-4, 6.6e-5, 1.7e-5, 1.9e-4]
  drops = drops_of(dropped, stats, active, sizes)
  assert sum(drops) == sum(dropped)  # The total number of ones does not move.
  # Each favoured layer keeps (floor(1.25 d) - d) of what it was due to drop...
  assert drops[0] == 6 and drops[1] == 366 - 91 and drops[3] == 73 - 18
  # ... and fc1 drops that many more of its smallest weights.
  assert drops[2] == 5867 + 1 + 91 + 18
  # The same count changes as regrowing more (bounded_regrowth), none of it as
  # extra new connections: every layer regrows its nominal drop.
  free = [s - (a - d) for s, a, d in zip(sizes, active, dropped)]
  regrown = bounded(dropped, stats, free)
  assert [d - x for d, x in zip(dropped, drops)] == [r - d for r, d in zip(regrown, dropped)]
  # No usable statistic (momentum not fed yet): the nominal drops.
  assert drops_of(dropped, [0.0, float("nan"), 0.0, 0.0], active, sizes) == dropped


def test_redistributed_drops_respect_active_and_free_positions():
  # A favoured, nearly dense layer gains only its 2 free positions; a layer due
  # to drop all it has cannot drop more; the rest goes by the statistic.
  drops = drops_of([40, 8, 40], [10.0, 0.001, 0.001], [100, 8, 100], [102, 100, 1000])
  assert drops == [38, 6, 44]
  # The usual split between layers with room: the favoured one keeps the most.
  assert drops_of([8, 8], [1.0, 10.0], [8, 100], [100, 200]) == [8, 8]


def test_redistributed_drops_random_cases_are_exact_and_within_bounds():
  rng = np.random.default_rng(2)
  for _ in range(80):
    layers = int(rng.integers(1, 7))
    active = rng.integers(0, 60, layers)
    sizes = active + rng.integers(0, 40, layers)
    dropped = np.floor(active * rng.uniform(0, 1, layers)).astype(int)
    stats = rng.exponential(size=layers) * (rng.random(layers) > 0.2)
    growth, keep = float(rng.uniform(1, 3)), float(rng.uniform(0, 1))
    drops = np.asarray(drops_of(dropped, stats, active, sizes, growth=growth, keep=keep))
    assert drops.sum() == dropped.sum()
    assert np.all(drops >= 0) and np.all(drops <= active)
    change = dropped - drops  # Count change of each layer (it regrows `dropped`).
    assert np.all(change <= np.floor(growth * dropped) - dropped)
    assert np.all(change <= sizes - active)  # Room to regrow `dropped`.
    assert np.all(-change <= dropped - np.ceil(keep * dropped))


def test_redistributed_drops_in_tf_function_and_bad_bounds():
  fn = tf.function(lambda d, s, a, z: redistributed_drops(d, s, a, z))
  drops = fn(tf.constant([4, 4], tf.int32), tf.constant([1.0, 0.0], tf.float64),
             tf.constant([10, 10], tf.int32), tf.constant([50, 50], tf.int32))
  assert drops.numpy().tolist() == [3, 5]
  with pytest.raises(ValueError, match="growth must be a number >= 1"):
    redistributed_drops([1], [1.0], [1], [1], growth=0.5)
  with pytest.raises(ValueError, match=r"keep must be in \[0, 1\]"):
    redistributed_drops([1], [1.0], [1], [1], keep=-0.1)


def test_update_mask_n_drop():
  mask = tf.constant([1., 1., 1., 1., 0., 0., 0., 0.])
  w = tf.constant([0.1, 0.2, 3.0, 4.0, 0., 0., 0., 0.])
  g = tf.constant([0., 0., 0., 0., 5., 1., 4., 3.])
  # Due to drop 2 (fraction 0.5): drop 1 instead, grow 2: the layer gains one.
  new, grown = update_mask(mask, w, g, 0.5, n_drop=1, grow_count=2)
  assert new.numpy().tolist() == [0., 1., 1., 1., 1., 0., 1., 0.]
  assert grown.numpy().sum() == 2
  # Drop 3, grow 2: it loses one (its smallest weights go).
  new, _ = update_mask(mask, w, g, 0.5, n_drop=3, grow_count=2)
  assert new.numpy().tolist() == [0., 0., 0., 1., 1., 0., 1., 0.]
  # Clipped to the active count.
  new, _ = update_mask(mask, w, g, 0.5, n_drop=50, grow_count=0)
  assert new.numpy().sum() == 0
  with pytest.raises(ValueError, match="n_drop and max_update"):
    update_mask(mask, w, g, 0.5, n_drop=2, max_update=4)
