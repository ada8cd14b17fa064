"""Compressed layers built with capacity: dead slots, moving counts, redistribution."""

import os

import numpy as np
import pytest
import tensorflow as tf

import keras_rigl as kr
from keras_rigl._keras import keras, IS_KERAS3
from keras_rigl.layers import capacity as C
from keras_rigl.layers import statistics as S
from keras_rigl.layers import update as U
from keras_rigl.layers.scheduling import CompressedUpdater
from keras_rigl.masks import update_mask
from keras_rigl.redistribution import mean_abs_over_active, redistributed_drops

from conftest import sparse_ce, token_dataset
from test_compressed_layers import largest_static_tensor


def _mlp(seed=0):
  keras.utils.set_random_seed(seed)
  return keras.Sequential([
      keras.Input((12,)),
      keras.layers.Dense(32, activation="relu", name="fc1"),
      keras.layers.Dense(16, activation="relu", name="fc2"),
      keras.layers.Dense(3, name="fc3")])


def _live(layer):
  w = layer.compressed_weights[0]
  count = w.nnz
  return np.asarray(w.indices)[:count], np.asarray(w.values)[:count]


def _check_dead_slots(layer, optimizer=None):
  """Live positions ascending and distinct; dead slots: sentinel, value 0, slots 0."""
  w = layer.compressed_weights[0]
  count = w.nnz
  indices, values = np.asarray(w.indices), np.asarray(w.values)
  assert 0 < count <= w.capacity == len(values)
  assert np.all(np.diff(indices[:count]) > 0)
  assert np.all(indices[count:] == w.size - 1) and np.all(values[count:] == 0)
  if optimizer is not None:
    for slot in kr._keras.optimizer_slots(optimizer, w.values):
      assert np.all(np.asarray(slot)[count:] == 0)


# --- the layers ---------------------------------------------------------------


def test_capacity_adds_dead_slots_and_computes_the_same():
  plain = kr.layers.SparseDense(20, sparsity=0.9, seed=3, name="fc")
  roomy = kr.layers.SparseDense(20, sparsity=0.9, seed=3, name="fc", capacity=1.5)
  x = np.random.default_rng(0).normal(size=(4, 30)).astype("float32")
  plain(x), roomy(x)
  assert plain.kernel_values.shape[0] == 60 and roomy.kernel_values.shape[0] == 90
  assert int(roomy.kernel_count) == 60 and roomy.compressed_weights[0].nnz == 60
  assert not hasattr(plain, "kernel_count")  # Without capacity: today's storage.
  _check_dead_slots(roomy)
  np.testing.assert_array_equal(_live(roomy)[0], np.asarray(plain.kernel_indices))
  roomy.compressed_weights[0].assign(tf.constant(_live(roomy)[0]), plain.kernel_values)
  roomy.bias.assign(plain.bias)
  np.testing.assert_allclose(roomy(x).numpy(), plain(x).numpy(), atol=1e-6)
  assert roomy.sparsity == pytest.approx(plain.sparsity)
  np.testing.assert_array_equal(roomy.compressed_weights[0].dense(),
                                plain.compressed_weights[0].dense())


def test_dead_slot_values_do_not_reach_the_output():
  layer = kr.layers.SparseEmbedding(10, 4, sparsity=0.5, capacity=1.4)
  layer.build()
  w = layer.compressed_weights[0]
  ids = tf.constant([[9, 0, 3]])  # Row 9 holds the sentinel position 39.
  before = layer(ids).numpy()
  w.values.assign(tf.where(w.live(), w.values, 100.0))  # Garbage in dead slots.
  np.testing.assert_array_equal(layer(ids).numpy(), before)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(layer(ids))
  grad = tf.convert_to_tensor(tape.gradient(loss, w.values))
  assert np.all(grad.numpy()[w.nnz:] == 0)


@pytest.mark.parametrize("capacity", [None, 1.0, 1.25])
def test_get_config_round_trip(capacity):
  layer = kr.layers.SparsePointwiseConv2D(6, sparsity=0.5, capacity=capacity)
  config = layer.get_config()
  assert config["capacity"] == capacity
  again = kr.layers.SparsePointwiseConv2D.from_config(config)
  assert again.capacity == capacity
  again.build((None, 2, 2, 8))
  assert again.compressed_weights[0].capacity == C.slot_count(24, 48, capacity)


@pytest.mark.parametrize("bad", [0.9, 0, -1.0, float("nan"), float("inf"), "1.25", True])
def test_bad_capacity(bad):
  with pytest.raises(ValueError, match="capacity"):
    kr.layers.SparseDense(4, capacity=bad)


def test_sparsify_capacity_and_its_errors():
  model = kr.sparsify(_mlp(), 0.8, "uniform", storage="compressed", capacity=1.25)
  for layer in model.layers:
    w = layer.compressed_weights[0]
    assert w.capacity == min(w.size, int(np.ceil(1.25 * w.nnz - 1e-9)))
    _check_dead_slots(layer)
  masked = kr.sparsify(_mlp(), 0.8, "uniform")
  for m, c in zip(masked.layers, model.layers):  # Same live positions and values.
    positions = np.flatnonzero(np.asarray(m.masked_weights[0][1]).reshape(-1))
    np.testing.assert_array_equal(_live(c)[0], positions)
    np.testing.assert_array_equal(_live(c)[1],
                                  np.asarray(m.layer.kernel).reshape(-1)[positions])
  with pytest.raises(ValueError, match="storage='compressed'"):
    kr.sparsify(_mlp(), 0.8, capacity=1.25)
  with pytest.raises(ValueError, match="capacity"):
    kr.sparsify(_mlp(), 0.8, storage="compressed", capacity=0.5)


def test_strip_report_and_flops_count_live_entries():
  model = kr.sparsify(_mlp(), 0.8, "uniform", storage="compressed", capacity=2.0)
  layer = model.layers[0]
  w = layer.compressed_weights[0]
  live_positions, live_values = _live(layer)
  # Fewer live entries than at build: drop the last 10 (the update's job).
  w.assign(tf.constant(live_positions[:-10]), tf.constant(live_values[:-10]))
  _check_dead_slots(layer)
  assert w.nnz == len(live_positions) - 10
  row = [r for r in kr.sparsity_report(model).rows if r.name.startswith("fc1")][0]
  assert row.nnz == w.nnz
  assert kr.count_flops(model).nnz < kr.count_flops(
      kr.sparsify(_mlp(), 0.8, "uniform", storage="compressed")).nnz
  plain = kr.strip(model)
  x = np.random.default_rng(1).normal(size=(5, 12)).astype("float32")
  np.testing.assert_allclose(plain(x).numpy(), model(x).numpy(), atol=1e-5)
  assert np.count_nonzero(np.asarray(plain.layers[0].kernel)) <= w.nnz


# --- the update: different drop and grow counts ---------------------------------


def _problem(seed, n_rows=40, n_cols=30, nnz=240, batch=16):
  """Integer-valued inputs, so a^T d is exact in float32 and has many ties."""
  r = np.random.default_rng(seed)
  positions = np.sort(r.choice(n_rows * n_cols, nnz, replace=False)).astype(np.int32)
  values = (r.integers(1, 6, nnz) * r.choice([-0.5, 0.5], nnz)).astype(np.float32)
  a = r.integers(-2, 3, (batch, n_rows)).astype(np.float32)
  d = r.integers(-2, 3, (batch, n_cols)).astype(np.float32)
  return positions, values, a, d


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("n_drop,n_grow", [(30, 40), (40, 30), (0, 5), (12, 0), (72, 72)])
def test_different_drop_and_grow_counts_match_masked(seed, n_drop, n_grow):
  positions, values, a, d = _problem(seed)
  grow = lambda kept, k: U.rigl_grow(a, d, 40, 30, kept, k, block_elements=100)
  new, source = U.update(tf.constant(values), tf.constant(positions), 1200, 0.3, grow,
                         n_drop=n_drop, grow_count=n_grow)
  new, source = new.numpy(), source.numpy()
  assert len(new) == len(positions) - n_drop + n_grow
  assert np.all(np.diff(new) > 0)
  carried = source >= 0
  np.testing.assert_array_equal(new[carried], positions[source[carried]])
  mask = np.zeros(1200, np.float32)
  mask[positions] = 1
  weights = np.zeros(1200, np.float32)
  weights[positions] = values
  expected, _ = update_mask(mask.reshape(40, 30), weights.reshape(40, 30),
                            np.abs(a.T @ d), 0.3, n_drop=n_drop, grow_count=n_grow)
  np.testing.assert_array_equal(new, np.flatnonzero(expected.numpy().reshape(-1)))


def test_gradient_statistic_is_the_masked_one():
  positions, _, a, d = _problem(4)
  dense = a.T @ d
  got = S.gradient_at(a, d, tf.constant(positions), 30).numpy()
  np.testing.assert_array_equal(got, dense.reshape(-1)[positions])
  mask = np.zeros(1200, np.float32)
  mask[positions[:100]] = 1
  live = np.arange(len(positions)) < 100
  assert float(S.mean_abs_live(got, live)) == float(
      mean_abs_over_active(np.abs(dense).reshape(-1), mask))
  # Embedding: ids are one-hot rows.
  ids = np.random.default_rng(0).integers(0, 40, 16)
  one_hot = np.eye(40, dtype=np.float32)[ids]
  np.testing.assert_array_equal(S.gradient_at(tf.constant(ids), d, tf.constant(positions), 30),
                                (one_hot.T @ d).reshape(-1)[positions])


def test_a_layer_at_capacity_cannot_gain_and_the_total_stays_exact():
  # Layer 0 is favoured 10x but has no free slot; layer 1 has room.
  dropped, active = [20, 20, 40], [100, 100, 200]
  free_sizes = [1000, 1000, 1000]
  capped = [100, 1000, 1000]
  unlimited = redistributed_drops(dropped, [10.0, 1.0, 0.1], active, free_sizes).numpy()
  bounded = redistributed_drops(dropped, [10.0, 1.0, 0.1], active, capped).numpy()
  assert unlimited[0] < 20 and bounded[0] == 20  # At capacity: drops what it regrows.
  assert bounded.sum() == unlimited.sum() == sum(dropped)


# --- fit: redistribution on compressed layers -----------------------------------


def _data(seed=0, n=128):
  r = np.random.default_rng(seed)
  x = r.normal(size=(n, 12)).astype("float32")
  y = (np.abs(x[:, 0]) + x[:, 1] > 0.5).astype("int32") + (x[:, 2] > 1).astype("int32")
  return tf.data.Dataset.from_tensor_slices((x, y)).batch(32, drop_remainder=True)


class _Counts(keras.callbacks.Callback):
  """Live positions of every sparse layer right after each update."""

  def __init__(self, rigl):
    super().__init__()
    self.rigl, self.seen = rigl, []

  def on_train_batch_begin(self, batch, logs=None):
    step = int(self.model.optimizer.iterations.numpy())
    if self.rigl.last_update_step == step and (not self.seen or self.seen[-1][0] != step):
      self.seen.append((step, [_positions(l) for l in self.model.layers
                               if _positions(l) is not None]))


def _positions(layer):
  if isinstance(layer, kr.SparseWrapper):
    return np.flatnonzero(np.asarray(layer.masked_weights[0][1]).reshape(-1))
  if isinstance(layer, kr.layers.CompressedLayer):
    return _live(layer)[0]
  return None


def _fit(model, redistribution, optimizer, epochs=3, static_shapes=False, **kwargs):
  data = _data()
  model.compile(optimizer, sparse_ce())
  rigl = kr.RigLScheduler(data, update_freq=2, drop_fraction=0.3, end_step=10,
                          redistribution=redistribution, **kwargs)
  rigl.static_shapes = static_shapes  # The TPU update's switch (an attribute).
  counts = _Counts(rigl)
  model.fit(data, epochs=epochs, verbose=0, callbacks=[rigl, counts])
  return rigl, counts.seen


def test_gradient_redistribution_picks_the_same_connections_as_masked():
  masked = kr.sparsify(_mlp(), 0.85, "uniform", seed=1)
  compressed = kr.sparsify(_mlp(), 0.85, "uniform", seed=1, storage="compressed",
                           capacity=2.0)
  # lr 0: both storages hold the same weights at every update (grown ones at 0),
  # so the drops and growths (ties included) and counts must agree exactly.
  r_m, seen_m = _fit(masked, "gradient", keras.optimizers.SGD(0.0))
  r_c, seen_c = _fit(compressed, "gradient", keras.optimizers.SGD(0.0))
  assert r_m.updates == r_c.updates == 6
  assert r_m.count_history == r_c.count_history
  counts = [sum(c.values()) for _, c in r_c.count_history]
  assert len(set(counts)) == 1  # The total is exact...
  assert len({tuple(c.values()) for _, c in r_c.count_history}) > 1  # ...layer counts move.
  assert len(seen_m) == len(seen_c) == 6
  for (s_m, p_m), (s_c, p_c) in zip(seen_m, seen_c):
    assert s_m == s_c
    for a, b in zip(p_m, p_c):
      np.testing.assert_array_equal(a, b)
  for layer in compressed.layers:
    _check_dead_slots(layer)


def test_gradient_redistribution_with_training_keeps_up_with_masked():
  masked = kr.sparsify(_mlp(), 0.85, "uniform", seed=1)
  compressed = kr.sparsify(_mlp(), 0.85, "uniform", seed=1, storage="compressed",
                           capacity=2.0)
  r_m, _ = _fit(masked, "gradient", keras.optimizers.SGD(0.05, momentum=0.9))
  r_c, _ = _fit(compressed, "gradient", keras.optimizers.SGD(0.05, momentum=0.9))
  assert r_m.count_history == r_c.count_history


def test_momentum_redistribution_first_update_matches_masked():
  """Before any connection has grown, the live momentum is the masked one."""
  masked = kr.sparsify(_mlp(), 0.85, "uniform", seed=1)
  compressed = kr.sparsify(_mlp(), 0.85, "uniform", seed=1, storage="compressed",
                           capacity=2.0)
  initial = {f"{l.name}/kernel": l.compressed_weights[0].nnz for l in compressed.layers}
  histories = []
  for model in (masked, compressed):
    data = _data()
    model.compile(keras.optimizers.SGD(0.0), sparse_ce())
    rigl = kr.RigLScheduler(data, update_freq=3, begin_step=3, end_step=3,
                            drop_fraction=0.3, redistribution="momentum")
    model.fit(data, epochs=1, verbose=0, callbacks=[rigl])
    histories.append(rigl.count_history)
  assert len(histories[1]) == 1 and histories[0] == histories[1]
  assert histories[1][0][1] != initial  # The counts moved.


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
@pytest.mark.parametrize("redistribution", ["gradient", "momentum"])
def test_dead_slots_stay_zero_through_training(optimizer, redistribution):
  model = kr.sparsify(_mlp(), 0.85, "uniform", seed=2, storage="compressed", capacity=1.3)
  opt = (keras.optimizers.SGD(0.1, momentum=0.9) if optimizer == "sgd_momentum"
         else keras.optimizers.Adam(0.01))
  rigl, _ = _fit(model, redistribution, opt, epochs=4)
  assert rigl.updates == 6
  totals = {sum(c.values()) for _, c in rigl.count_history}
  assert len(totals) == 1
  for layer in model.layers:
    _check_dead_slots(layer, opt)
    w = layer.compressed_weights[0]
    assert w.nnz <= w.capacity
  # Live counts moved away from the initial ones in some layer.
  first = kr.sparsify(_mlp(), 0.85, "uniform", seed=2, storage="compressed", capacity=1.3)
  assert [l.compressed_weights[0].nnz for l in model.layers] != \
      [l.compressed_weights[0].nnz for l in first.layers]


def test_a_full_layer_is_bounded_by_its_slots():
  keras.utils.set_random_seed(0)
  model = keras.Sequential([
      keras.Input((12,)),
      kr.layers.SparseDense(32, 0.85, activation="relu", name="fc1", capacity=1.0),
      kr.layers.SparseDense(16, 0.85, activation="relu", name="fc2", capacity=3.0),
      kr.layers.SparseDense(3, 0.5, name="fc3", capacity=1.0)])
  rigl, _ = _fit(model, "gradient", keras.optimizers.SGD(0.05, momentum=0.9), epochs=4)
  start = {"fc1/kernel": 58, "fc2/kernel": 77, "fc3/kernel": 24}
  assert sum(start.values()) == sum(model.layers[i].compressed_weights[0].nnz
                                    for i in range(3))
  for _, counts in rigl.count_history:
    assert sum(counts.values()) == sum(start.values())
    for layer in model.layers:
      assert counts[f"{layer.name}/kernel"] <= layer.compressed_weights[0].capacity
  for layer in model.layers:
    _check_dead_slots(layer)


def test_redistribution_needs_capacity():
  model = kr.sparsify(_mlp(), 0.8, "uniform", storage="compressed")
  with pytest.raises(ValueError, match=r"capacity=1\.25"):
    _fit(model, "gradient", keras.optimizers.SGD(0.1))


def test_min_fan_in_refuses_capacity_layers():
  model = kr.sparsify(_mlp(), 0.8, "uniform", storage="compressed", capacity=1.25)
  optimizer = keras.optimizers.SGD(0.1)
  with pytest.raises(ValueError, match="capacity=None"):
    _fit(model, None, optimizer, min_fan_in=1)
  assert int(optimizer.iterations.numpy()) == 0  # Refused before the first step.


def test_static_shapes_refuses_capacity_layers_before_training():
  model = kr.sparsify(_mlp(), 0.8, "uniform", storage="compressed", capacity=1.25)
  optimizer = keras.optimizers.SGD(0.1)
  with pytest.raises(ValueError, match="static shapes"):
    _fit(model, None, optimizer, static_shapes=True)
  assert int(optimizer.iterations.numpy()) == 0


def test_static_shapes_min_fan_in_on_compressed_refused_before_training():
  model = kr.sparsify(_mlp(), 0.8, "uniform", storage="compressed")
  optimizer = keras.optimizers.SGD(0.1)
  with pytest.raises(ValueError, match="min_fan_in=1 works with dynamic shapes only"):
    _fit(model, None, optimizer, min_fan_in=1, static_shapes=True)
  assert int(optimizer.iterations.numpy()) == 0


def test_static_shapes_reaches_compressed_layers_and_picks_the_same_connections():
  runs = {}
  for static in (False, True):
    model = kr.sparsify(_mlp(), 0.85, "uniform", seed=1, storage="compressed")
    rigl, _ = _fit(model, None, keras.optimizers.SGD(0.0), static_shapes=static)
    assert rigl._compressed.static_shapes is static  # pylint: disable=protected-access
    runs[static] = [np.asarray(w.positions()) for l in model.layers
                    for w in getattr(l, "compressed_weights", ())]
  assert rigl.updates == 6
  for dynamic, static in zip(runs[False], runs[True]):
    np.testing.assert_array_equal(dynamic, static)


@pytest.mark.parametrize("scheduler", ["rigl", "set"])
def test_plain_updates_keep_the_count_on_capacity_layers(scheduler):
  model = kr.sparsify(_mlp(), 0.85, "uniform", storage="compressed", capacity=1.5)
  model.compile(keras.optimizers.Adam(0.01), sparse_ce())
  before = [l.compressed_weights[0].nnz for l in model.layers]
  cb = (kr.RigLScheduler(_data(), update_freq=2, end_step=10) if scheduler == "rigl"
        else kr.SETScheduler(update_freq=2, end_step=10))
  model.fit(_data(), epochs=3, verbose=0, callbacks=[cb])
  assert cb.updates == 6 and max(change for _, change in cb.update_history) > 0
  assert [l.compressed_weights[0].nnz for l in model.layers] == before
  for layer in model.layers:
    _check_dead_slots(layer, model.optimizer)


def test_updater_refuses_capacity_layers_under_xla():
  model = keras.Sequential([keras.Input((6,)), kr.layers.SparseDense(4, 0.5, capacity=1.5)])
  updater = CompressedUpdater(model, seed=0, scheduler="RigLScheduler")
  updater.static_shapes = True
  with pytest.raises(ValueError, match="static shapes"):
    updater.apply(tf.constant(0, tf.int64), 0.3)


# --- checkpoints and graphs -----------------------------------------------------


def test_checkpoint_keeps_live_counts_and_slots(tmp_path):
  model = kr.sparsify(_mlp(), 0.85, "uniform", seed=2, storage="compressed", capacity=1.5)
  _fit(model, "gradient", keras.optimizers.SGD(0.05, momentum=0.9))
  counts = [l.compressed_weights[0].nnz for l in model.layers]
  path = os.path.join(tmp_path, "w.weights.h5" if IS_KERAS3 else "w.h5")
  model.save_weights(path)
  fresh = kr.sparsify(_mlp(), 0.85, "uniform", seed=2, storage="compressed", capacity=1.5)
  assert [l.compressed_weights[0].nnz for l in fresh.layers] != counts
  fresh.load_weights(path)
  assert [l.compressed_weights[0].nnz for l in fresh.layers] == counts
  for a, b in zip(model.layers, fresh.layers):
    for u, v in zip(a.weights, b.weights):
      np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    _check_dead_slots(b)
  x = np.random.default_rng(0).normal(size=(3, 12)).astype("float32")
  np.testing.assert_array_equal(model(x).numpy(), fresh(x).numpy())
  # tf.train.Checkpoint too (what BackupAndRestore writes).
  ckpt = tf.train.Checkpoint(model=model)
  saved = ckpt.save(os.path.join(tmp_path, "ckpt"))
  again = kr.sparsify(_mlp(), 0.85, "uniform", seed=2, storage="compressed", capacity=1.5)
  tf.train.Checkpoint(model=again).restore(saved).assert_existing_objects_matched()
  assert [l.compressed_weights[0].nnz for l in again.layers] == counts


def test_momentum_taps_travel_in_resume_state():
  model = kr.sparsify(_mlp(), 0.85, "uniform", seed=2, storage="compressed", capacity=1.5)
  rigl, _ = _fit(model, "momentum", keras.optimizers.SGD(0.05, momentum=0.9), epochs=1)
  meta, arrays = rigl.resume_state()
  keys = [k for k in arrays if k.startswith("tap/") and k.endswith("/buffer")]
  assert sorted(keys) == sorted(f"tap/{l.name}/kernel/buffer" for l in model.layers)
  for layer in model.layers:
    buffer = arrays[f"tap/{layer.name}/kernel/buffer"]
    w = layer.compressed_weights[0]
    assert buffer.shape == (w.capacity,) and np.any(buffer[:w.nnz] != 0)
  assert meta["count_history"]


@pytest.mark.parametrize("redistribution", ["gradient", "momentum"])
def test_redistribution_update_graph_has_no_dense_tensor(redistribution):
  n_in, n_out = 600, 500
  keras.utils.set_random_seed(0)
  model = keras.Sequential([
      keras.Input((n_in,)),
      kr.layers.SparseDense(n_out, 0.98, activation="relu", name="big", capacity=1.5,
                            block_size=5000),
      kr.layers.SparseDense(3, 0.5, name="out", capacity=1.5)])
  r = np.random.default_rng(0)
  data = tf.data.Dataset.from_tensor_slices(
      (r.normal(size=(32, n_in)).astype("float32"), r.integers(0, 3, 32))).batch(16)
  model.compile(keras.optimizers.SGD(0.01), sparse_ce())
  rigl = kr.RigLScheduler(data, update_freq=1, end_step=2, redistribution=redistribution)
  model.fit(data, epochs=1, verbose=0, callbacks=[rigl])
  assert rigl.updates == 2
  with model.distribute_strategy.scope():
    graph = rigl._update_fn.get_concrete_function(  # pylint: disable=protected-access
        tf.TensorSpec([], tf.int64), rigl._update_argument(0, check=False)).graph  # pylint: disable=protected-access
  assert largest_static_tensor(graph) < n_in * n_out // 10


@pytest.mark.parametrize("batch", [1, 20, 64])
def test_kernels_take_sentinel_slots_next_to_a_live_last_position(batch):
  """Dead slots repeat position N - 1, which may also be live: every method sums."""
  from keras_rigl.layers import kernels  # pylint: disable=g-import-not-at-top
  n_in, n_out = 7, 5
  r = np.random.default_rng(0)
  live = np.sort(np.append(r.choice(34, 9, replace=False), 34)).astype(np.int32)
  indices = tf.constant(np.concatenate([live, [34] * 4]).astype(np.int32))
  values = np.concatenate([r.normal(size=10), np.zeros(4)]).astype(np.float32)
  x = r.normal(size=(batch, n_in)).astype(np.float32)
  dense = np.zeros(35, np.float32)
  dense[live] = values[:10]
  dense = dense.reshape(n_in, n_out)
  expected_grad = (x.T @ (2 * (x @ dense))).reshape(-1)[live]
  for method in kernels.METHODS:
    v = tf.Variable(values)
    with tf.GradientTape() as tape:
      y = kernels.sparse_matmul(tf.constant(x), v, indices, n_in, n_out, method=method,
                                indices_sorted=True)
      loss = tf.reduce_sum(y * y)
    np.testing.assert_allclose(y.numpy(), x @ dense, atol=1e-5, err_msg=method)
    np.testing.assert_allclose(tape.gradient(loss, v).numpy()[:10], expected_grad,
                               rtol=1e-4, atol=1e-4, err_msg=method)


def test_embedding_redistribution_matches_masked():
  keras.utils.set_random_seed(0)
  dense = keras.Sequential([
      keras.Input((5,), dtype="int32"), keras.layers.Embedding(50, 6, name="emb"),
      keras.layers.Flatten(), keras.layers.Dense(8, activation="relu", name="fc"),
      keras.layers.Dense(3, name="out")])
  data = token_dataset()
  masked = kr.sparsify(dense, 0.8, "uniform", seed=2, exclude=["out"])
  compressed = kr.sparsify(dense, 0.8, "uniform", seed=2, exclude=["out"],
                           storage="compressed", capacity=2.0)
  histories = []
  for model in (masked, compressed):
    model.compile(keras.optimizers.SGD(0.0), sparse_ce())
    rigl = kr.RigLScheduler(data, update_freq=2, drop_fraction=0.5, end_step=6,
                            redistribution="gradient")
    model.fit(data, epochs=2, verbose=0, callbacks=[rigl])
    histories.append(rigl.count_history)
  assert len(histories[0]) == 4 and histories[0] == histories[1]
  assert len({tuple(c.values()) for _, c in histories[1]}) > 1
  np.testing.assert_array_equal(_live(compressed.layers[0])[0],
                                _positions(masked.layers[0]))


@pytest.mark.parametrize("redistribution", ["gradient", "momentum"])
def test_mirrored_replicas_hold_identical_slots_and_counts(redistribution):
  from conftest import shared_mirrored_strategy  # pylint: disable=g-import-not-at-top
  strategy = shared_mirrored_strategy()
  with strategy.scope():
    model = kr.sparsify(_mlp(), 0.85, "uniform", seed=2, storage="compressed", capacity=1.5)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), sparse_ce())
  data = _data()
  rigl = kr.RigLScheduler(data, update_freq=2, drop_fraction=0.3, end_step=10,
                          redistribution=redistribution)
  model.fit(data, epochs=3, verbose=0, callbacks=[rigl])
  assert rigl.updates == 6
  assert len({sum(c.values()) for _, c in rigl.count_history}) == 1
  for layer in model.layers:
    w = layer.compressed_weights[0]
    for variable in (w.indices, w.values, w.count_variable):
      distributed = variable.value if IS_KERAS3 else variable
      local = [np.asarray(v) for v in strategy.experimental_local_results(distributed)]
      assert len(local) == 2
      np.testing.assert_array_equal(local[0], local[1])
    _check_dead_slots(layer, model.optimizer)


def test_keras_file_round_trip(tmp_path):
  model = kr.sparsify(_mlp(), 0.85, "uniform", seed=2, storage="compressed", capacity=1.5)
  _fit(model, "gradient", keras.optimizers.SGD(0.05, momentum=0.9), epochs=2)
  path = os.path.join(tmp_path, "m.keras" if IS_KERAS3 else "m.h5")
  model.save(path)
  loaded = keras.models.load_model(path)
  x = np.random.default_rng(0).normal(size=(3, 12)).astype("float32")
  np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
  for a, b in zip(model.layers, loaded.layers):
    assert b.capacity == 1.5
    assert b.compressed_weights[0].nnz == a.compressed_weights[0].nnz
