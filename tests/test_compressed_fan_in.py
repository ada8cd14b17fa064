"""`min_fan_in` on compressed layers: the masked storage's connections, O(nnz) graphs."""

import numpy as np
import pytest
import tensorflow as tf

import keras_rigl as kr
from keras_rigl._keras import keras
from keras_rigl.layers import fan_in as F
from keras_rigl.layers import update as U
from keras_rigl.masks import min_fan_in_update

from conftest import sparse_ce
from test_compressed_layers import largest_static_tensor
from test_compressed_update import _problem

N_ROWS, N_COLS = 40, 30


def _skewed(seed, nnz=240):
  """A third of the units start with 0-2 inputs: the fill step has work to do."""
  r = np.random.default_rng(seed)
  counts = np.zeros(N_COLS, np.int64)
  counts[:10] = r.integers(0, 3, 10)
  rest = nnz - counts.sum()
  counts[10:] = rest // 20 + (np.arange(20) < rest % 20)
  cols = r.permutation(N_COLS)
  positions = np.sort(np.concatenate([
      r.choice(N_ROWS, count, replace=False) * N_COLS + col
      for col, count in zip(cols, counts)])).astype(np.int32)
  _, values, a, d = _problem(seed)
  return positions, values[:nnz], a, d


def _compressed(positions, values, blocks, fraction, min_fan_in):
  new, source = F.update(tf.constant(values), tf.constant(positions), N_ROWS, N_COLS,
                         fraction, min_fan_in, blocks)
  new, source = new.numpy(), source.numpy()
  assert np.all(np.diff(new) > 0)  # Ascending, distinct.
  carried = source >= 0
  np.testing.assert_array_equal(new[carried], positions[source[carried]])
  return new


def _masked(positions, values, scores, fraction, min_fan_in):
  mask = np.zeros(N_ROWS * N_COLS, np.float32)
  mask[positions] = 1
  weights = np.zeros_like(mask)
  weights[positions] = values
  shape = (N_ROWS, N_COLS)
  new_mask, _ = min_fan_in_update(mask.reshape(shape), weights.reshape(shape),
                                  scores.reshape(shape), fraction, min_fan_in)
  return np.flatnonzero(new_mask.numpy().reshape(-1))


def _fan_in(positions):
  return np.bincount(np.asarray(positions) % N_COLS, minlength=N_COLS)


@pytest.mark.parametrize("problem", [_problem, _skewed])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("fraction", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("min_fan_in", [1, 3, 8, 50])
def test_same_connections_as_masked_storage(problem, seed, fraction, min_fan_in):
  positions, values, a, d = problem(seed)  # Integer scores: many ties.
  blocks = U.gradient_blocks(a, d, N_ROWS, N_COLS, tf.int32, block_elements=100)
  new = _compressed(positions, values, blocks, fraction, min_fan_in)
  expected = _masked(positions, values, np.abs(a.T @ d), fraction, min_fan_in)
  np.testing.assert_array_equal(new, expected)


def test_skewed_problem_needs_fills():
  """The skewed problems do exercise the fill step (units below the minimum)."""
  positions, _, _, _ = _skewed(0)
  assert (_fan_in(positions) < 3).sum() >= 5


@pytest.mark.parametrize("block", [1, 30, 77, 1200])
def test_block_size_does_not_change_the_choice(block):
  positions, values, a, d = _skewed(1)
  reference = _compressed(positions, values, U.gradient_blocks(a, d, N_ROWS, N_COLS, tf.int32),
                          0.5, 3)
  blocks = U.gradient_blocks(a, d, N_ROWS, N_COLS, tf.int32, block_elements=block)
  np.testing.assert_array_equal(_compressed(positions, values, blocks, 0.5, 3), reference)


def test_embedding_ids_score_like_one_hot_inputs():
  positions, values, _, d = _skewed(4)
  ids = np.random.default_rng(4).integers(0, N_ROWS, 16)
  one_hot = np.eye(N_ROWS, dtype=np.float32)[ids]
  by_ids = _compressed(positions, values, U.gradient_blocks(
      tf.constant(ids), d, N_ROWS, N_COLS, tf.int32, block_elements=100), 0.5, 3)
  by_rows = _compressed(positions, values, U.gradient_blocks(
      one_hot, d, N_ROWS, N_COLS, tf.int32, block_elements=100), 0.5, 3)
  np.testing.assert_array_equal(by_ids, by_rows)
  np.testing.assert_array_equal(by_rows, _masked(positions, values, np.abs(one_hot.T @ d),
                                                 0.5, 3))


def test_non_finite_values_and_scores_keep_counts_exact():
  positions, values, a, d = _skewed(2)
  values[:4] = np.nan
  a[0, :] = np.inf
  blocks = U.gradient_blocks(a, d, N_ROWS, N_COLS, tf.int32, block_elements=100)
  new = _compressed(positions, values, blocks, 0.3, 2)
  assert len(new) == len(positions)
  scores = np.abs(a.T @ d)
  np.testing.assert_array_equal(new, _masked(positions, values, scores, 0.3, 2))


def test_random_growth_keeps_units_connected():
  """SET's min_fan_in: random scores block by block; the minimum and the count hold."""
  positions, values, _, _ = _skewed(3)
  seed = tf.constant([5, 7], tf.int64)
  blocks = U.random_blocks(N_ROWS, N_COLS, seed, tf.int32, block_elements=100)
  new = _compressed(positions, values, blocks, 1.0, 3)
  assert len(new) == len(positions)
  assert _fan_in(new).min() >= 3
  again = _compressed(positions, values, U.random_blocks(N_ROWS, N_COLS, seed, tf.int32,
                                                         block_elements=100), 1.0, 3)
  np.testing.assert_array_equal(new, again)  # Stateless: same seed, same draw.


def test_update_graph_has_no_dense_tensor():
  n_rows, n_cols, nnz = 600, 500, 3000

  @tf.function
  def rigl(values, indices, a, d):
    blocks = U.gradient_blocks(a, d, n_rows, n_cols, tf.int32, block_elements=5000)
    return F.update(values, indices, n_rows, n_cols, 0.3, 2, blocks)

  @tf.function
  def set_(values, indices):
    blocks = U.random_blocks(n_rows, n_cols, tf.constant([1, 2], tf.int64), tf.int32,
                             block_elements=5000)
    return F.update(values, indices, n_rows, n_cols, 0.3, 2, blocks)

  specs = [tf.TensorSpec([nnz]), tf.TensorSpec([nnz], tf.int32)]
  for fn, extra in ((rigl, [tf.TensorSpec([None, n_rows]), tf.TensorSpec([None, n_cols])]),
                    (set_, [])):
    graph = fn.get_concrete_function(*specs, *extra).graph
    assert largest_static_tensor(graph) < n_rows * n_cols // 10


def _model():
  keras.utils.set_random_seed(0)
  return keras.Sequential([
      keras.Input((12,)),
      keras.layers.Dense(32, activation="relu", name="fc1"),
      keras.layers.Dense(3, name="fc2")])


def test_fit_makes_the_same_update_in_both_storages(toy_dataset):
  dense = _model()
  masked = kr.sparsify(dense, 0.9, "uniform", seed=1)
  compressed = kr.sparsify(dense, 0.9, "uniform", seed=1, storage="compressed")
  for model in (masked, compressed):
    model.compile(keras.optimizers.SGD(0.1), sparse_ce())
    rigl = kr.RigLScheduler(toy_dataset, update_freq=1, drop_fraction=0.5, end_step=0,
                            min_fan_in=2)
    model.fit(toy_dataset, epochs=1, steps_per_epoch=1, verbose=0, callbacks=[rigl])
    assert rigl.updates == 1
  for m, c in zip(masked.layers, compressed.layers):
    mask = np.asarray(m.masked_weights[0][1])
    np.testing.assert_array_equal(np.asarray(c.kernel_indices),
                                  np.flatnonzero(mask.reshape(-1)))
    floor = min(2, mask.shape[0], int(mask.sum()) // mask.shape[1])
    assert mask.sum(axis=0).min() >= floor


def test_set_fit_keeps_units_connected(toy_dataset):
  model = kr.sparsify(_model(), 0.95, "uniform", storage="compressed")
  model.compile(keras.optimizers.SGD(0.1), sparse_ce())
  before = [np.asarray(layer.kernel_indices).copy() for layer in model.layers]
  set_ = kr.SETScheduler(update_freq=2, drop_fraction=0.5, end_step=8, min_fan_in=1)
  model.fit(toy_dataset, epochs=1, verbose=0, callbacks=[set_])
  assert set_.updates >= 4
  for layer, old in zip(model.layers, before):
    weight = layer.compressed_weights[0]
    idx = np.asarray(layer.kernel_indices)
    assert len(idx) == len(old) and np.all(np.diff(idx) > 0)
    floor = F.unit_floor(1, weight.n_rows, weight.n_cols, weight.nnz)
    assert np.bincount(idx % weight.n_cols, minlength=weight.n_cols).min() >= floor
