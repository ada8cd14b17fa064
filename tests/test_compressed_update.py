"""The compressed drop/grow update: same choices as the masked storage, O(nnz) graphs."""

import numpy as np
import pytest
import tensorflow as tf

import keras_rigl as kr
from keras_rigl._keras import keras
from keras_rigl.layers import update as U
from keras_rigl.masks import update_mask

from conftest import shared_mirrored_strategy, sparse_ce, token_dataset
from test_compressed_layers import largest_static_tensor


def _problem(seed, n_rows=40, n_cols=30, nnz=240, batch=16):
  """Integer-valued inputs, so a^T d is exact in float32 and has many ties."""
  r = np.random.default_rng(seed)
  n = n_rows * n_cols
  positions = np.sort(r.choice(n, nnz, replace=False)).astype(np.int32)  # Layers keep them so.
  values = (r.integers(1, 6, nnz) * r.choice([-0.5, 0.5], nnz)).astype(np.float32)
  a = r.integers(-2, 3, (batch, n_rows)).astype(np.float32)
  d = r.integers(-2, 3, (batch, n_cols)).astype(np.float32)
  return positions, values, a, d


def _compressed(positions, values, a, d, fraction, n_rows=40, n_cols=30, block=100):
  grow = lambda kept, k: U.rigl_grow(a, d, n_rows, n_cols, kept, k, block_elements=block)
  new, source = U.update(tf.constant(values), tf.constant(positions), n_rows * n_cols,
                         fraction, grow)
  new, source = new.numpy(), source.numpy()
  assert np.all(np.diff(new) > 0)  # Still ascending.
  carried = source >= 0
  np.testing.assert_array_equal(new[carried], positions[source[carried]])
  moved = np.setdiff1d(np.arange(len(positions)), source[carried])  # Old slots dropped.
  return new, moved


def _masked(positions, values, a, d, fraction, n_rows=40, n_cols=30):
  mask = np.zeros(n_rows * n_cols, np.float32)
  mask[positions] = 1
  weights = np.zeros_like(mask)
  weights[positions] = values
  grads = np.abs(a.T @ d).reshape(-1)
  new_mask, _ = update_mask(mask.reshape(n_rows, n_cols), weights.reshape(n_rows, n_cols),
                            grads.reshape(n_rows, n_cols), fraction)
  return np.flatnonzero(new_mask.numpy().reshape(-1))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.7, 1.0])
def test_same_connections_as_masked_storage(seed, fraction):
  positions, values, a, d = _problem(seed)
  new, _ = _compressed(positions, values, a, d, fraction)
  assert len(np.unique(new)) == len(positions)
  np.testing.assert_array_equal(np.sort(new), _masked(positions, values, a, d, fraction))


def test_block_size_does_not_change_the_choice():
  positions, values, a, d = _problem(7)
  results = [np.sort(_compressed(positions, values, a, d, 0.5, block=b)[0])
             for b in (1, 30, 77, 1200, 10**6)]
  for other in results[1:]:
    np.testing.assert_array_equal(results[0], other)


@pytest.mark.parametrize("first_rows", [0.0, 1.0, 50.0], ids=["zero", "alike", "large"])
def test_first_block_estimate_never_changes_the_choice(first_rows):
  # top_free starts from a threshold estimated on the first block: a first
  # block scoring far above the rest makes too few entries reach it (the exact
  # re-scan runs), one of zeros lets every entry through (the buffer is cut).
  positions, values, a, d = _problem(11)
  a = a.copy()
  a[:, :4] *= first_rows  # Rows 0-3: the first block of 100 scores (30 columns).
  for fraction in (0.2, 1.0):
    new, _ = _compressed(positions, values, a, d, fraction)
    np.testing.assert_array_equal(np.sort(new), _masked(positions, values, a, d, fraction))


def test_embedding_ids_grow_like_one_hot_inputs():
  r = np.random.default_rng(3)
  positions, values, _, d = _problem(3)
  ids = r.integers(0, 40, 16)
  one_hot = np.eye(40, dtype=np.float32)[ids]
  by_ids = U.rigl_grow(tf.constant(ids), d, 40, 30, tf.sort(tf.constant(positions, tf.int64)),
                       50, block_elements=200)
  by_rows = U.rigl_grow(one_hot, d, 40, 30, tf.sort(tf.constant(positions, tf.int64)), 50,
                        block_elements=200)
  np.testing.assert_array_equal(by_ids.numpy(), by_rows.numpy())


def test_regrown_connection_keeps_its_state():
  values = tf.constant([0.1, 5.0, 4.0])
  indices = tf.constant([0, 1, 2])
  # Drops positions 0 and 2; grow returns the just-dropped position 0 and a new one, 3.
  grow = lambda kept, k: tf.constant([3, 0], tf.int32)[:k]
  new, source = U.update(values, indices, 10, 0.67, grow)
  assert new.numpy().tolist() == [0, 1, 3] and source.numpy().tolist() == [0, 1, -1]


def test_non_finite_scores_keep_counts_exact():
  positions, values, a, d = _problem(1)
  values[-5:] = np.nan  # In the last rows: row 0's infinite scores grow it back.
  a[0, :] = np.inf
  new, slots = _compressed(positions, values, a, d, 0.3)
  assert len(np.unique(new)) == len(positions)
  nan_slots = set(range(len(values) - 5, len(values)))
  assert nan_slots <= set(slots.tolist())  # NaN values are dropped first.


def test_update_graph_has_no_dense_tensor():
  n_rows, n_cols = 600, 500

  @tf.function
  def rigl(values, indices, a, d):
    grow = lambda kept, k: U.rigl_grow(a, d, n_rows, n_cols, kept, k, block_elements=5000)
    return U.update(values, indices, n_rows * n_cols, 0.3, grow)

  @tf.function
  def set_(values, indices):
    grow = lambda kept, k: U.set_grow(n_rows * n_cols, kept, k, tf.constant([1, 2], tf.int64),
                                      3000)
    return U.update(values, indices, n_rows * n_cols, 0.3, grow)

  specs = [tf.TensorSpec([3000]), tf.TensorSpec([3000], tf.int32)]
  for fn, extra in ((rigl, [tf.TensorSpec([None, n_rows]), tf.TensorSpec([None, n_cols])]),
                    (set_, [])):
    graph = fn.get_concrete_function(*specs, *extra).graph
    assert largest_static_tensor(graph) < n_rows * n_cols // 10


def _model(dense=False, seed=0):
  keras.utils.set_random_seed(seed)
  model = keras.Sequential([
      keras.Input((12,)),
      keras.layers.Dense(32, activation="relu", name="fc1"),
      keras.layers.Dense(3, name="fc2")])
  return model


def _masked_positions(layer):
  return np.flatnonzero(np.asarray(layer.masked_weights[0][1]).reshape(-1))


def test_fit_makes_the_same_update_in_both_storages(toy_dataset):
  dense = _model()
  masked = kr.sparsify(dense, 0.8, "uniform", seed=1)
  compressed = kr.sparsify(dense, 0.8, "uniform", seed=1, storage="compressed")
  for model in (masked, compressed):
    model.compile(keras.optimizers.SGD(0.1), sparse_ce())
    rigl = kr.RigLScheduler(toy_dataset, update_freq=1, drop_fraction=0.3, end_step=0)
    model.fit(toy_dataset, epochs=1, steps_per_epoch=1, verbose=0, callbacks=[rigl])
    assert rigl.updates == 1
  for m, c in zip(masked.layers, compressed.layers):
    positions = np.sort(np.asarray(c.kernel_indices))
    np.testing.assert_array_equal(positions, _masked_positions(m))
    kernel = np.asarray(m.layer.kernel).reshape(-1)
    order = np.argsort(np.asarray(c.kernel_indices))
    np.testing.assert_allclose(np.asarray(c.kernel_values)[order], kernel[positions],
                               atol=1e-6)


def test_embedding_fit_makes_the_same_update_in_both_storages():
  keras.utils.set_random_seed(0)
  dense = keras.Sequential([
      keras.Input((5,), dtype="int32"), keras.layers.Embedding(50, 6, name="emb"),
      keras.layers.Flatten(), keras.layers.Dense(3, name="out")])
  data = token_dataset()
  masked = kr.sparsify(dense, 0.8, "uniform", seed=2, exclude=["out"])
  compressed = kr.sparsify(dense, 0.8, "uniform", seed=2, exclude=["out"],
                           storage="compressed")
  assert isinstance(compressed.layers[0], kr.layers.SparseEmbedding)
  for model in (masked, compressed):
    model.compile(keras.optimizers.SGD(0.1), sparse_ce())
    rigl = kr.RigLScheduler(data, update_freq=1, drop_fraction=0.5, end_step=0)
    model.fit(data, epochs=1, steps_per_epoch=1, verbose=0, callbacks=[rigl])
  np.testing.assert_array_equal(np.sort(np.asarray(compressed.layers[0].embeddings_indices)),
                                _masked_positions(masked.layers[0]))


class _Snapshot(keras.callbacks.Callback):
  """Indices / values / slots of one layer before and just after an update."""

  def __init__(self, layer, rigl):
    super().__init__()
    self.layer, self.rigl, self.pairs = layer, rigl, []
    self._before = None

  def _state(self):
    slots = kr._keras.optimizer_slots(self.model.optimizer, self.layer.kernel_values)
    return (np.asarray(self.layer.kernel_indices).copy(),
            np.asarray(self.layer.kernel_values).copy(),
            [np.asarray(s).copy() for s in slots])

  def on_train_batch_end(self, batch, logs=None):
    self._before = self._state()

  def on_train_batch_begin(self, batch, logs=None):
    if self._before is not None and self.rigl.last_update_step == \
        int(self.model.optimizer.iterations.numpy()):
      self.pairs.append((self._before, self._state()))


@pytest.mark.parametrize("grow_init", ["zeros", "random_normal"])
def test_moved_entries_reset_values_and_slots(toy_dataset, grow_init):
  model = kr.sparsify(_model(), 0.8, "uniform", storage="compressed")
  model.compile(keras.optimizers.Adam(0.01), sparse_ce())
  rigl = kr.RigLScheduler(toy_dataset, update_freq=3, begin_step=3, end_step=12,
                          grow_init=grow_init)
  snap = _Snapshot(model.layers[0], rigl)
  model.fit(toy_dataset, epochs=1, verbose=0, callbacks=[rigl, snap])
  assert len(snap.pairs) == 2
  for (idx0, val0, slots0), (idx1, val1, slots1) in snap.pairs:
    assert np.all(np.diff(idx1) > 0)  # Positions stay ascending.
    moved = ~np.isin(idx1, idx0)  # New connections, by position.
    old_slot = np.searchsorted(idx0, idx1[~moved])  # Where the others were.
    assert moved.any()
    assert len(slots1) == 2  # Adam's m and v.
    for s0, s1 in zip(slots0, slots1):
      assert np.all(s1[moved] == 0)
      np.testing.assert_array_equal(s1[~moved], s0[old_slot])
    np.testing.assert_array_equal(val1[~moved], val0[old_slot])
    if grow_init == "zeros":
      assert np.all(val1[moved] == 0)
    else:
      assert np.all(val1[moved] != 0)


@pytest.mark.parametrize("scheduler", ["rigl", "set"])
def test_counts_exact_after_many_updates(toy_dataset, scheduler):
  model = kr.sparsify(_model(), 0.9, "erk", storage="compressed")
  model.compile(keras.optimizers.SGD(0.1, momentum=0.9), sparse_ce())
  before = [np.asarray(l.kernel_indices).copy() for l in model.layers]
  if scheduler == "rigl":
    cb = kr.RigLScheduler(toy_dataset, update_freq=1, drop_fraction=0.5, end_step=40,
                          grad_accumulation_steps=2)
  else:
    cb = kr.SETScheduler(update_freq=1, drop_fraction=0.5, end_step=40)
  model.fit(toy_dataset, epochs=4, verbose=0, callbacks=[cb])
  assert cb.updates >= 30
  for layer, old in zip(model.layers, before):
    weight = layer.compressed_weights[0]
    idx = np.asarray(layer.kernel_indices)
    assert len(idx) == len(old) == len(np.unique(idx))
    assert idx.min() >= 0 and idx.max() < weight.size
    assert not np.array_equal(np.sort(idx), np.sort(old))


def test_mirrored_replicas_hold_identical_connections(toy_dataset):
  strategy = shared_mirrored_strategy()
  with strategy.scope():
    model = kr.sparsify(_model(), 0.8, "uniform", storage="compressed")
    model.compile(keras.optimizers.Adam(0.01), sparse_ce())
  rigl = kr.RigLScheduler(toy_dataset, update_freq=2, end_step=16)
  model.fit(toy_dataset, epochs=2, verbose=0, callbacks=[rigl])
  assert rigl.updates >= 4
  for layer in model.layers:
    for variable in (layer.kernel_indices, layer.kernel_values):
      distributed = variable.value if kr._keras.IS_KERAS3 else variable
      local = [np.asarray(v) for v in strategy.experimental_local_results(distributed)]
      assert len(local) == 2
      np.testing.assert_array_equal(local[0], local[1])


def test_magnitude_pruning_refuses_compressed_layers(toy_dataset):
  model = kr.sparsify(_model(), 0.8, "uniform", storage="compressed")
  model.compile(keras.optimizers.SGD(0.1), sparse_ce())
  with pytest.raises(ValueError, match="storage='masked'"):
    model.fit(toy_dataset, epochs=1, verbose=0,
              callbacks=[kr.MagnitudePruningScheduler(0.0, 0.9, 0, 4, 1)])
