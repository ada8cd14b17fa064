"""Tests for keras_rigl.masks: random_mask, update_mask (drop/grow), prune_mask.

Tie rule (masks._drop_positions / masks._positions): among equal drop scores
the entry with the HIGHER flat index is dropped (as the authors' code, which
keeps the first n_keep of a top_k over |W|); among equal grow scores the
LOWER flat index is grown.
n_drop (masks.drop_count) is the authors' int32(float32(n) * float32(f)).
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from keras_rigl import update_mask as public_update_mask
from keras_rigl.masks import drop_count, name_seed, prune_mask, random_mask, update_mask


def _np(x):
  return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


def _f(values):
  return tf.constant(values, tf.float32)


def authors_n_drop(n_active, fraction):
  """The authors' rule, in numpy: int32(float32(n_ones) * float32(fraction))."""
  return int(np.float32(n_active) * np.float32(fraction))


# ----------------------------------------------------------------- random_mask


@pytest.mark.parametrize("shape", [(7,), (10, 10), (3, 3, 5, 7), (13, 1), (1,)])
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.3, 0.5, 0.9, 0.99])
def test_random_mask_has_exactly_floor_s_n_zeros(shape, sparsity):
  mask = _np(random_mask(shape, sparsity, seed=(3, 4)))
  size = int(np.prod(shape))
  assert mask.shape == shape
  assert mask.dtype == np.float32
  assert set(np.unique(mask)) <= {0.0, 1.0}
  assert int(np.sum(mask == 0)) == math.floor(sparsity * size)


def test_random_mask_dtype():
  mask = random_mask((4, 6), 0.5, seed=(0, 0), dtype=tf.float16)
  assert mask.dtype == tf.float16
  assert int(np.sum(_np(mask) == 0)) == 12


def test_random_mask_is_deterministic_for_a_seed():
  a = _np(random_mask((20, 30), 0.8, seed=name_seed(7, "dense/kernel")))
  b = _np(random_mask((20, 30), 0.8, seed=name_seed(7, "dense/kernel")))
  np.testing.assert_array_equal(a, b)
  # Also inside a tf.function (graph mode gives the same stateless draw).
  c = _np(tf.function(lambda: random_mask((20, 30), 0.8,
                                          seed=name_seed(7, "dense/kernel")))())
  np.testing.assert_array_equal(a, c)


def test_random_mask_differs_for_another_seed_or_name():
  base = _np(random_mask((20, 30), 0.8, seed=name_seed(7, "dense/kernel")))
  other_seed = _np(random_mask((20, 30), 0.8, seed=name_seed(8, "dense/kernel")))
  other_name = _np(random_mask((20, 30), 0.8, seed=name_seed(7, "dense_1/kernel")))
  assert not np.array_equal(base, other_seed)
  assert not np.array_equal(base, other_name)
  # Same count of zeros in all of them.
  assert np.sum(base == 0) == np.sum(other_seed == 0) == np.sum(other_name == 0) == 480


def test_name_seed_is_stable_and_non_negative():
  # CRC32 of the name: a fixed value in every process (not Python's hash()).
  assert name_seed(0, "fc1/kernel") == name_seed(0, "fc1/kernel")
  assert name_seed(5, "abc") == (5, 0x352441C2)
  s = name_seed(-1, "x")
  assert all(0 <= v <= 0x7FFFFFFF for v in s)
  assert name_seed(0, "a") != name_seed(0, "b")


def test_random_mask_positions_are_roughly_uniform():
  # Over many seeds each position is zero about `sparsity` of the time.
  counts = np.zeros(50)
  for seed in range(200):
    counts += _np(random_mask((50,), 0.5, seed=(seed, 1))) == 0
  assert counts.min() > 60 and counts.max() < 140


# ----------------------------------------------------------------- update_mask


def test_update_mask_docstring_example_and_public_name():
  assert public_update_mask is update_mask
  new, grown = update_mask(_f([1, 1, 0, 0]), _f([0.1, 2.0, 0, 0]),
                           _f([0, 0, 5, 1]), 0.5)
  assert _np(new).tolist() == [0, 1, 1, 0]
  assert _np(grown).tolist() == [False, False, True, False]


def test_update_mask_hand_checked():
  # 3 active of 8; drop floor(3 * 0.7) = 2 smallest |w|: positions 4 (0.1) and
  # 0 (-0.2). Position 2 (|w| = 3) stays. Grow 2 among all not-kept positions
  # {0, 1, 3, 4, 5, 6, 7} by |grad|: position 7 (9) and position 4 (8): the
  # just-dropped position 4 comes back.
  mask = _f([1, 0, 1, 0, 1, 0, 0, 0])
  w = _f([-0.2, 5.0, 3.0, 7.0, 0.1, 0, 0, 0])  # Inactive values are ignored.
  g = _f([1, 2, 100, 3, -8, 0.5, 0, 9])
  new, grown = update_mask(mask, w, tf.abs(g), 0.7)
  assert _np(new).tolist() == [0, 0, 1, 0, 1, 0, 0, 1]
  assert _np(grown).tolist() == [False] * 7 + [True]


def test_update_mask_drop_ties_go_to_the_higher_flat_index():
  # All four active weights have |w| = 1: drop 2 -> indices 3 and 2 (higher
  # first, as the authors' top_k-and-keep-first). Grow scores tie (1.0) on
  # the candidates {2, 3, 4, 5, 6, 7} (0 and 1 are kept): grow 2 and 3 back
  # (lower first), so nothing changes.
  mask = _f([1, 1, 1, 1, 0, 0, 0, 0])
  w = _f([1, -1, 1, -1, 0, 0, 0, 0])
  g = _f([0, 0, 1, 1, 1, 1, 1, 1])
  new, grown = update_mask(mask, w, g, 0.5)
  assert _np(new).tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
  assert not _np(grown).any()
  # Grow scores favour 4..7 (tied): grow 4 and 5 (lower first).
  g = _f([0, 0, 0, 0, 1, 1, 1, 1])
  new, grown = update_mask(mask, w, g, 0.5)
  assert _np(new).tolist() == [1, 1, 0, 0, 1, 1, 0, 0]
  assert _np(grown).tolist() == [False] * 4 + [True, True, False, False]


def test_update_mask_ties_on_a_2d_mask_use_row_major_flat_index():
  mask = _f([[1, 1], [0, 0]])
  w = _f([[2, 2], [0, 0]])
  g = _f([[0, 0], [3, 3]])
  new, grown = update_mask(mask, w, g, 0.5)  # drop (0,1), grow (1,0).
  assert _np(new).tolist() == [[1, 0], [1, 0]]
  assert _np(grown).tolist() == [[False, False], [True, False]]


@pytest.mark.parametrize("max_update", [None, 40])
def test_drop_ties_match_the_authors_sort_and_keep_first(max_update):
  # The authors: top_k(|W * M|, k=N) (ties to the lower index), keep the first
  # n_keep. With every active |w| > 0 that is exactly our kept set.
  for seed in range(10):
    r = np.random.default_rng(seed)
    mask = _np(random_mask((60,), 0.5, seed=(seed, 2)))
    w = (r.integers(1, 4, size=60) * mask).astype("float32")  # Many ties.
    n_drop = authors_n_drop(int(mask.sum()), 0.4)
    order = _np(tf.math.top_k(tf.constant(w), k=60).indices)
    authors_kept = np.zeros(60, bool)
    authors_kept[order[:int(mask.sum()) - n_drop]] = True
    new, grown = update_mask(mask, w, np.zeros(60, "float32") - 1, 0.4,
                             max_update=max_update)
    # Grow scores below anything: the grown ones are the lowest-index candidates;
    # compare only what was kept (active before and after, not grown back).
    kept = (_np(new) > 0) & (mask > 0) & ~_np(grown)
    regrown = kept & ~authors_kept
    assert not (authors_kept & ~kept).any(), seed
    assert regrown.sum() <= n_drop


def test_drop_fraction_zero_leaves_the_mask_unchanged():
  r = np.random.default_rng(0)
  mask = _np(random_mask((6, 7), 0.6, seed=(1, 2)))
  new, grown = update_mask(mask, r.normal(size=(6, 7)), r.random((6, 7)), 0.0)
  np.testing.assert_array_equal(_np(new), mask)
  assert not _np(grown).any()


def test_drop_fraction_one_regrows_everything_by_grow_score():
  # 3 active; all 3 dropped; the 3 largest grow scores anywhere win, including
  # an active position (index 1), which is thereby "regrown" in place.
  mask = _f([1, 1, 1, 0, 0, 0])
  w = _f([5, 6, 7, 0, 0, 0])
  g = _f([0.1, 9, 0.2, 8, 7, 0.3])
  new, grown = update_mask(mask, w, g, 1.0)
  assert _np(new).tolist() == [0, 1, 0, 1, 1, 0]
  assert _np(grown).tolist() == [False, False, False, True, True, False]
  # The count of ones is unchanged.
  assert _np(new).sum() == 3


def test_all_dense_mask_cannot_change():
  # Nothing is inactive: the dropped ones are the only candidates to grow.
  mask = tf.ones([4, 5])
  r = np.random.default_rng(1)
  new, grown = update_mask(mask, r.normal(size=(4, 5)), r.random((4, 5)), 0.5)
  np.testing.assert_array_equal(_np(new), np.ones((4, 5)))
  assert not _np(grown).any()


def test_nearly_empty_mask():
  mask = _f([0, 0, 1, 0, 0])
  w = _f([0, 0, 0.5, 0, 0])
  g = _f([0, 4, 1, 0, 3])
  # floor(1 * 0.5) = 0: nothing moves.
  new, grown = update_mask(mask, w, g, 0.5)
  assert _np(new).tolist() == [0, 0, 1, 0, 0]
  assert not _np(grown).any()
  # drop_fraction 1: the single connection moves to the best grow score.
  new, grown = update_mask(mask, w, g, 1.0)
  assert _np(new).tolist() == [0, 1, 0, 0, 0]
  assert _np(grown).tolist() == [False, True, False, False, False]


def test_empty_mask_stays_empty():
  new, grown = update_mask(tf.zeros([5]), tf.ones([5]), tf.ones([5]), 0.5)
  assert _np(new).sum() == 0 and not _np(grown).any()


@pytest.mark.parametrize("max_update", [None, 64])
def test_count_of_ones_is_constant_and_grown_is_new_minus_old(max_update):
  for seed in range(25):
    r = np.random.default_rng(seed)
    shape = [(8, 9), (3, 3, 4, 5), (50,)][seed % 3]
    sparsity = [0.5, 0.9, 0.3, 0.75, 0.0][seed % 5]
    drop_fraction = float(r.uniform(0, 1))
    mask = _np(random_mask(shape, sparsity, seed=(seed, 0)))
    # Integer-valued weights/grads: plenty of ties as well.
    w = r.integers(-3, 4, size=shape).astype("float32")
    g = r.integers(0, 4, size=shape).astype("float32")
    new, grown = update_mask(mask, w, g, drop_fraction, max_update=max_update)
    new, grown = _np(new), _np(grown)
    assert new.shape == mask.shape and grown.shape == mask.shape
    assert new.sum() == mask.sum(), seed
    np.testing.assert_array_equal(grown, (new > 0) & ~(mask > 0))
    # Exactly n_drop moved at most; kept ones are a superset of what we expect.
    n_active = int(mask.sum())
    n_drop = authors_n_drop(n_active, drop_fraction)
    assert grown.sum() <= n_drop
    lost = (mask > 0) & ~(new > 0)
    assert lost.sum() == grown.sum()
    # Lost connections are among the n_drop smallest |w| of the active ones
    # (the others dropped may have been grown back).
    if lost.any():
      nth_smallest = np.sort(np.abs(w[mask > 0]))[n_drop - 1]
      assert np.abs(w[lost]).max() <= nth_smallest


def test_update_mask_matches_a_numpy_reference():
  """A straightforward numpy version of the rule, stable sorts for the ties."""
  def reference(mask, w, g, fraction):
    flat_m, flat_w, flat_g = mask.ravel() > 0, w.ravel(), g.ravel()
    active = np.flatnonzero(flat_m)
    n_drop = authors_n_drop(len(active), fraction)
    # Smallest |w| first; among equal |w| the higher index first.
    order = active[np.lexsort((-active, np.abs(flat_w[active])))]
    kept = flat_m.copy()
    kept[order[:n_drop]] = False
    candidates = np.flatnonzero(~kept)
    best = candidates[np.argsort(-flat_g[candidates], kind="stable")[:n_drop]]
    new = kept.copy()
    new[best] = True
    return new.reshape(mask.shape).astype("float32")

  for seed in range(15):
    r = np.random.default_rng(100 + seed)
    mask = _np(random_mask((7, 11), 0.7, seed=(seed, 5)))
    w = r.integers(-4, 5, size=(7, 11)).astype("float32")
    g = r.integers(0, 6, size=(7, 11)).astype("float32")
    fraction = [0.1, 0.3, 0.5, 1.0][seed % 4]
    new, _ = update_mask(mask, w, g, fraction)
    np.testing.assert_array_equal(_np(new), reference(mask, w, g, fraction))


def test_just_dropped_connection_can_come_back():
  mask = _f([1, 1, 0, 0])
  w = _f([0.1, 1.0, 0, 0])
  g = _f([10, 0, 1, 2])  # The dropped position 0 has the largest gradient.
  new, grown = update_mask(mask, w, g, 0.5)
  assert _np(new).tolist() == [1, 1, 0, 0]
  assert not _np(grown).any()  # Not "grown": it was active before.


def test_n_drop_follows_the_authors_float32_product():
  # 90 active x 0.7: the authors' float32 product gives 63 (float64 floor: 62).
  mask = tf.concat([tf.ones([90]), tf.zeros([90])], 0)
  w = tf.range(1.0, 181.0)
  g = tf.concat([tf.zeros([90]), tf.ones([90])], 0)
  for fraction, expected in ((0.7, 63), (0.3, 27), (0.9, 81), (0.29, 26), (1.0, 90)):
    new, grown = update_mask(mask, w, g, fraction)
    assert int(_np(grown).sum()) == expected, fraction
    assert _np(new).sum() == 90
  # Also as a float64 tensor and inside tf.function.
  fn = tf.function(lambda f: update_mask(mask, w, g, f)[1])
  assert int(_np(fn(tf.constant(0.7, tf.float64))).sum()) == 63
  assert int(_np(fn(tf.constant(0.7, tf.float32))).sum()) == 63


def test_drop_count_matches_the_authors_formula_on_many_pairs():
  r = np.random.default_rng(0)
  n = np.concatenate([np.arange(0, 400), r.integers(0, 3_000_000, size=600)])
  decimal = [k / d for d in (10, 20, 100, 1000) for k in range(d + 1)]
  fractions = decimal + list(r.random(200))
  fn = tf.function(drop_count)
  for f in fractions:
    expected = (n.astype(np.float32) * np.float32(f)).astype(np.int64)
    got = _np(drop_count(tf.constant(n, tf.int32), f))  # Elementwise over n.
    np.testing.assert_array_equal(got, np.minimum(expected, n), err_msg=str(f))
  # Exact rational arithmetic agrees wherever the float32 product does not
  # round across an integer; these are the documented cases where it does.
  assert int(drop_count(90, 0.7)) == 63 == 90 * 7 // 10
  assert int(drop_count(100, 0.53)) == 52  # Exact: 53 (authors' code: 52).
  assert int(fn(tf.constant(10), tf.constant(0.3, tf.float64))) == 3
  # Never more than n_active (float32(2**25 + 1) rounds to 2**25), never negative.
  assert int(drop_count(2 ** 25 + 1, 1.0)) == 2 ** 25
  assert int(drop_count(7, 0.0)) == 0


@pytest.mark.parametrize("max_update", [None, 400])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_never_change_the_count(bad, max_update):
  # The example: half the grow scores NaN took 305 ones to 301.
  rng = np.random.RandomState(0)
  n = 3200
  mask = (rng.rand(n) < .1).astype("float32")
  w = rng.randn(n).astype("float32") * mask
  g = rng.randn(n).astype("float32")
  g[rng.rand(n) < .5] = bad
  with np.errstate(invalid="ignore"):  # inf * 0 in the test's own set-up.
    poisoned = np.where(rng.rand(n) < .2, np.float32(bad), w) * mask
  for scores_w in (w, poisoned):
    new, grown = update_mask(mask, scores_w, g, 0.3, max_update=max_update)
    assert _np(new).sum() == mask.sum()
    assert _np(grown).sum() == ((_np(new) > 0) & (mask == 0)).sum()
  # All grow scores non-finite: still exact.
  new, _ = update_mask(mask, w, np.full(n, bad, "float32"), 0.5, max_update=max_update)
  assert _np(new).sum() == mask.sum()
  pruned = prune_mask(mask, np.where(rng.rand(n) < .5, np.float32(bad), w), 0.95)
  assert _np(pruned).sum() == n - math.floor(0.95 * n)


def test_custom_drop_scores():
  mask = _f([1, 1, 1, 0])
  w = _f([0.1, 5, 9, 0])           # By magnitude position 0 would go.
  drop_scores = _f([7, 0.5, 3, 0])  # Position 1 has the smallest custom score.
  g = _f([0, 0, 0, 1])
  new, grown = update_mask(mask, w, g, 0.4, drop_scores=drop_scores)
  assert _np(new).tolist() == [1, 0, 1, 1]
  assert _np(grown).tolist() == [False, False, False, True]
  # Without drop_scores: magnitude drops position 0.
  new, _ = update_mask(mask, w, g, 0.4)
  assert _np(new).tolist() == [0, 1, 1, 1]


def test_drop_fraction_as_a_tensor_and_mask_dtype_is_kept():
  mask = tf.constant([1, 1, 0, 0], tf.float16)
  new, grown = update_mask(mask, _f([0.1, 2, 0, 0]), _f([0, 0, 5, 1]),
                           tf.constant(0.5))
  assert new.dtype == tf.float16 and grown.dtype == tf.bool
  assert _np(new).tolist() == [0, 1, 1, 0]


def test_update_mask_inside_tf_function():
  @tf.function
  def step(mask, w, g, fraction):
    return update_mask(mask, w, g, fraction)

  r = np.random.default_rng(3)
  for fraction in (0.0, 0.25, 0.5, 1.0):
    mask = random_mask((6, 8), 0.75, seed=(9, 9))
    w = tf.constant(r.normal(size=(6, 8)), tf.float32)
    g = tf.constant(r.random((6, 8)), tf.float32)
    eager = update_mask(mask, w, g, fraction)
    graph = step(mask, w, g, tf.constant(fraction, tf.float64))
    np.testing.assert_array_equal(_np(graph[0]), _np(eager[0]))
    np.testing.assert_array_equal(_np(graph[1]), _np(eager[1]))


@pytest.mark.parametrize("jit_compile", [False, True])
def test_max_update_static_shapes_same_result(jit_compile):
  # max_update makes every shape static, so the update compiles with XLA
  # (XLA on CPU works on this machine; the jit_compile=True case checks it).
  fn = tf.function(
      lambda m, w, g, f: update_mask(m, w, g, f, max_update=16),
      jit_compile=jit_compile)
  r = np.random.default_rng(4)
  for seed in range(6):
    mask = random_mask((8, 10), 0.8, seed=(seed, 1))  # 16 active.
    w = tf.constant(r.integers(-3, 4, size=(8, 10)), tf.float32)
    g = tf.constant(r.integers(0, 5, size=(8, 10)), tf.float32)
    fraction = [0.0, 0.3, 0.5, 1.0, 0.9, 0.1][seed]
    expected = update_mask(mask, w, g, fraction)
    got = fn(mask, w, g, tf.constant(fraction, tf.float64))
    np.testing.assert_array_equal(_np(got[0]), _np(expected[0]))
    np.testing.assert_array_equal(_np(got[1]), _np(expected[1]))


def test_max_update_larger_than_the_tensor():
  mask = _f([1, 1, 0, 0])
  new, grown = update_mask(mask, _f([0.1, 2, 0, 0]), _f([0, 0, 5, 1]), 0.5,
                           max_update=100)
  assert _np(new).tolist() == [0, 1, 1, 0]
  assert _np(grown).tolist() == [False, False, True, False]


# ------------------------------------------------------------------ prune_mask


def test_prune_mask_keeps_the_largest_magnitudes():
  assert _np(prune_mask(tf.ones([4]), _f([0.1, -3, 2, 0.5]), 0.5)).tolist() == [0, 1, 1, 0]
  r = np.random.default_rng(5)
  w = r.normal(size=(10, 10)).astype("float32")
  mask = _np(prune_mask(tf.ones([10, 10]), w, 0.73))
  assert int(mask.sum()) == 100 - 73
  assert np.abs(w[mask > 0]).min() >= np.abs(w[mask == 0]).max()


def test_prune_mask_never_revives_pruned_connections():
  mask = _f([0, 0, 1, 1, 1, 1])
  w = _f([100, 50, 0.1, 3, -2, 1])  # The pruned ones have big weights.
  new = _np(prune_mask(mask, w, 0.5))  # Keep 3 of 6: drop one of the 4 active.
  assert new.tolist() == [0, 0, 0, 1, 1, 1]
  new = _np(prune_mask(mask, w, 5 / 6))  # floor(6 * 5/6) = 5 zeros: keep 1.
  assert new.tolist() == [0, 0, 0, 1, 0, 0]
  new = _np(prune_mask(tf.ones([10]), tf.range(1.0, 11.0), 0.7))  # 7 zeros.
  assert new.tolist() == [0] * 7 + [1] * 3


def test_prune_mask_already_sparser_is_unchanged():
  mask = _f([0, 0, 0, 1, 0, 1])
  new = _np(prune_mask(mask, _f([1, 2, 3, 4, 5, 6]), 0.5))
  assert new.tolist() == [0, 0, 0, 1, 0, 1]


def test_prune_mask_with_max_update_and_jit():
  fn = tf.function(lambda m, w, s: prune_mask(m, w, s, max_update=50),
                   jit_compile=True)
  r = np.random.default_rng(6)
  w = tf.constant(r.normal(size=(10, 10)), tf.float32)
  mask = tf.ones([10, 10])
  for s in (0.0, 0.2, 0.5):
    np.testing.assert_array_equal(_np(fn(mask, w, tf.constant(s, tf.float64))),
                                  _np(prune_mask(mask, w, s)))
