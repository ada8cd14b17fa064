"""The masked storage and the host-scheduled schedulers on whatever backend runs.

`make test` runs this file on TensorFlow (both Keras flavours) and again with
KERAS_BACKEND=jax (`make test-jax`); `make test-torch` runs it on PyTorch.
Data are numpy arrays and lists of numpy batches, which every backend takes;
checks read variables through numpy.
"""

import warnings

import numpy as np
import pytest

import keras_rigl as kr
from keras_rigl import _keras
from keras_rigl import backend
from keras_rigl._keras import keras

BACKEND = backend.NAME


def data(n=128, seed=1):
  r = np.random.default_rng(seed)
  x = r.normal(size=(n, 12)).astype("float32")
  return x, x[:, :3].argmax(axis=1).astype("int32")


def batches(x, y, size=32):
  return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]


def sparse_mlp(sparsity=0.8, mask_init="random", distribution="uniform"):
  keras.utils.set_random_seed(0)
  model = keras.Sequential([
      keras.Input((12,)),
      keras.layers.Dense(24, activation="relu", name="fc1"),
      keras.layers.Dense(24, activation="relu", name="fc2"),
      keras.layers.Dense(3, name="logits"),
  ])
  return kr.sparsify(model, sparsity, distribution, mask_init=mask_init)


def ce():
  return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def pairs(model):
  return [(np.asarray(w), np.asarray(m)) for layer in model.layers
          if isinstance(layer, kr.SparseWrapper) for w, m in layer.masked_weights]


def ones(model):
  return [int(m.sum()) for _, m in pairs(model)]


def assert_inactive_zero(model):
  for w, m in pairs(model):
    assert np.all(w[m == 0] == 0)


class Snapshot(keras.callbacks.Callback):
  """Weights, masks and optimizer slots when each step is about to start."""

  def __init__(self):
    super().__init__()
    self.states = []

  def on_train_batch_begin(self, batch, logs=None):
    backend.sync_state(self.model)  # JAX keeps the state outside the variables.
    state = []
    for layer in self.model.layers:
      if isinstance(layer, kr.SparseWrapper):
        for w, m in layer.masked_weights:
          slots = _keras.optimizer_slots(self.model.optimizer, w)
          state.append((np.array(w), np.array(m), [np.array(s) for s in slots]))
    self.states.append(state)


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam", "adamw"])
def test_static_sparse_training_keeps_inactive_weights_zero(optimizer):
  x, y = data()
  model = sparse_mlp()
  before = ones(model)
  opt = {"sgd_momentum": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
         "adam": lambda: keras.optimizers.Adam(0.01),
         "adamw": lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1)}[optimizer]()
  model.compile(opt, ce())
  history = model.fit(x, y, batch_size=32, epochs=3, verbose=0)
  assert np.isfinite(history.history["loss"][-1])
  assert history.history["loss"][-1] < history.history["loss"][0]
  assert ones(model) == before
  assert_inactive_zero(model)


def test_wrapper_config_round_trip_strip_report_flops():
  x, _ = data(8)
  model = sparse_mlp(0.75)
  wrapper = model.layers[0]
  clone = kr.SparseWrapper.from_config(wrapper.get_config())
  assert (clone.target_sparsity, clone.seed, clone.mask_init) == (
      wrapper.target_sparsity, wrapper.seed, wrapper.mask_init)
  assert round(wrapper.sparsity, 2) == 0.75
  plain = kr.strip(model)
  assert not any(isinstance(l, kr.SparseWrapper) for l in plain.layers)
  np.testing.assert_allclose(backend.to_numpy(plain(x)), backend.to_numpy(model(x)), rtol=1e-5,
                             atol=1e-6)
  report = kr.sparsity_report(model)
  assert report.nnz == sum(ones(model))
  flops = kr.count_flops(model)
  assert 0 < flops.ratio < 1


def test_erk_sparsify_and_saving_round_trip(tmp_path):
  x, _ = data(8)
  model = sparse_mlp(0.9, distribution="erk")
  path = str(tmp_path / "model.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  for (w0, m0), (w1, m1) in zip(pairs(model), pairs(loaded)):
    np.testing.assert_array_equal(m0, m1)
    np.testing.assert_array_equal(w0, w1)
  np.testing.assert_allclose(backend.to_numpy(loaded(x)), backend.to_numpy(model(x)), rtol=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
def test_rigl_with_data_exact_counts_and_slot_resets(optimizer):
  x, y = data()
  model = sparse_mlp()
  opt = (keras.optimizers.SGD(0.1, momentum=0.9) if optimizer == "sgd_momentum"
         else keras.optimizers.Adam(0.01))
  model.compile(opt, ce())
  counts = ones(model)
  before, after = Snapshot(), Snapshot()
  # The only update is due after step 3, just before step 4 starts.
  rigl = kr.RigLScheduler(batches(x, y), update_freq=3, drop_fraction=0.3,
                          drop_fraction_schedule="constant", begin_step=3, end_step=3)
  model.fit(x, y, batch_size=32, epochs=2, callbacks=[before, rigl, after], verbose=0)
  assert rigl.updates == 1 and rigl.last_update_step == 3
  assert ones(model) == counts
  assert_inactive_zero(model)
  grown_any = False
  for (w0, m0, slots0), (w1, m1, slots1) in zip(before.states[3], after.states[3]):
    assert len(slots0) == (1 if optimizer == "sgd_momentum" else 2)
    grown, kept, changed = (m1 == 1) & (m0 == 0), (m1 == 1) & (m0 == 1), m1 != m0
    grown_any |= grown.any()
    assert np.all(w1[grown] == 0)
    np.testing.assert_array_equal(w1[kept], w0[kept])
    for s0, s1 in zip(slots0, slots1):
      assert np.all(s1[changed] == 0)
      np.testing.assert_array_equal(s1[kept], s0[kept])
      assert np.any(s0[changed] != 0)  # The reset did something.
  assert grown_any


def test_rigl_grows_the_largest_dense_gradient():
  """One update with drop fraction 1: the new mask holds the top-|dL/d(W*M)| entries."""
  keras.utils.set_random_seed(0)
  model = kr.sparsify(keras.Sequential([keras.Input((12,)), keras.layers.Dense(3)]),
                      0.75, "uniform")
  model.compile(keras.optimizers.SGD(0.0), keras.losses.MeanSquaredError())
  x, _ = data(32)
  target = x[:, :3] * 2.0
  weight, mask = model.layers[0].masked_weights[0]
  w = np.asarray(weight) * np.asarray(mask)
  # d/dE of mean((x E + b - t)^2) over the batch and the 3 outputs.
  bias = np.asarray(model.layers[0].layer.bias)
  residual = x @ w + bias - target
  grad = 2.0 * x.T @ residual / residual.size
  n_ones = int(np.asarray(mask).sum())
  expected = np.zeros(grad.size, bool)
  expected[np.argsort(-np.abs(grad).ravel(), kind="stable")[:n_ones]] = True
  rigl = kr.RigLScheduler([(x, target)], update_freq=1, drop_fraction=1.0,
                          drop_fraction_schedule="constant", end_step=0)
  model.fit(x, target, batch_size=32, epochs=1, callbacks=[rigl], verbose=0)
  assert rigl.updates == 1
  np.testing.assert_array_equal(np.asarray(mask).ravel() > 0, expected)


def test_rigl_in_step_grows_the_largest_step_gradient():
  """RigLScheduler() without data: grow scores from the update step's own batch."""
  keras.utils.set_random_seed(0)
  model = kr.sparsify(keras.Sequential([keras.Input((12,)), keras.layers.Dense(3)]),
                      0.75, "uniform")
  model.compile(keras.optimizers.SGD(0.0), keras.losses.MeanSquaredError())
  x, _ = data(32)
  target = x[:, :3] * 2.0
  weight, mask = model.layers[0].masked_weights[0]
  w = np.asarray(weight) * np.asarray(mask)
  residual = x @ w + np.asarray(model.layers[0].layer.bias) - target
  grad = 2.0 * x.T @ residual / residual.size
  expected = np.zeros(grad.size, bool)
  expected[np.argsort(-np.abs(grad).ravel(), kind="stable")[:int(np.asarray(mask).sum())]] = True
  rigl = kr.RigLScheduler(update_freq=1, drop_fraction=1.0,
                          drop_fraction_schedule="constant", end_step=0)
  model.fit(x, target, batch_size=32, epochs=1, callbacks=[rigl], verbose=0)
  rigl.sync_updates()
  assert rigl.updates == 1
  np.testing.assert_array_equal(np.asarray(mask).ravel() > 0, expected)


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
def test_rigl_in_step_counts_and_dropped_slots(optimizer):
  x, y = data()
  model = sparse_mlp()
  opt = (keras.optimizers.SGD(0.1, momentum=0.9) if optimizer == "sgd_momentum"
         else keras.optimizers.Adam(0.01))
  model.compile(opt, ce())
  counts = ones(model)
  snapshot = Snapshot()
  rigl = kr.RigLScheduler(update_freq=2, drop_fraction=0.3, end_step=6)
  model.fit(x, y, batch_size=32, epochs=2, callbacks=[rigl, snapshot], verbose=0)
  rigl.sync_updates()
  assert rigl.updates == 4 and [s for s, _ in rigl.update_history] == [0, 2, 4, 6]
  assert all(change > 0 for _, change in rigl.update_history[:3])
  assert ones(model) == counts
  assert_inactive_zero(model)
  # The update at step 2 runs inside the third train step, which then applies
  # gradients masked by the new masks: dropped entries keep zero weights and slots.
  dropped_any = False
  for (_, m0, _), (w1, m1, slots1) in zip(snapshot.states[2], snapshot.states[3]):
    dropped = (m0 == 1) & (m1 == 0)
    dropped_any |= dropped.any()
    assert np.all(w1[dropped] == 0)
    for s1 in slots1:
      assert np.all(s1[dropped] == 0)
  assert dropped_any


def test_rigl_in_step_update_steps_with_steps_per_execution_and_refits():
  """Updates land on the steps due, in executions of 3 steps and over three fits."""
  x, y = data()
  model = sparse_mlp()
  # Keras on PyTorch runs one step per execution only.
  model.compile(keras.optimizers.SGD(0.1, momentum=0.9), ce(),
                steps_per_execution=1 if BACKEND == "torch" else 3)
  counts = ones(model)
  rigl = kr.RigLScheduler(update_freq=4, drop_fraction=0.3, end_step=12)
  installed = []
  for epoch in range(3):  # 4 steps a fit: executions of 3 and 1 steps.
    model.fit(x, y, batch_size=32, epochs=epoch + 1, initial_epoch=epoch,
              callbacks=[rigl], verbose=0)
    installed.append(rigl._in_step)  # pylint: disable=protected-access
  # Later fits run the update compiled at the first (no new trace per fit;
  # PyTorch runs its train step eagerly: nothing compiled to reuse).
  assert installed[0] is not None
  if BACKEND != "torch":
    assert all(u is installed[0] for u in installed)
  rigl.sync_updates()
  assert [s for s, _ in rigl.update_history] == [0, 4, 8]
  assert all(change > 0 for _, change in rigl.update_history)
  assert ones(model) == counts
  assert_inactive_zero(model)


def test_set_and_pruning_train():
  x, y = data()
  model = sparse_mlp()
  model.compile(keras.optimizers.Adam(0.01), ce())
  counts = ones(model)
  set_ = kr.SETScheduler(update_freq=2, end_step=6)
  model.fit(x, y, batch_size=32, epochs=2, callbacks=[set_], verbose=0)
  assert set_.updates == 4 and set_.update_history[0][1] > 0
  assert ones(model) == counts
  assert_inactive_zero(model)

  model = sparse_mlp(0.9, mask_init="dense")
  model.compile(keras.optimizers.SGD(0.05), ce())
  pruning = kr.MagnitudePruningScheduler(0.0, 0.5, begin_step=0, end_step=6, update_freq=2)
  model.fit(x, y, batch_size=32, epochs=2, callbacks=[pruning], verbose=0)
  assert [round(l.sparsity, 2) for l in model.layers if isinstance(l, kr.SparseWrapper)] \
      == [0.5, 0.5, 0.5]
  assert_inactive_zero(model)


def test_non_finite_weights_skip_that_layers_update():
  x, y = data()
  model = sparse_mlp()
  model.compile(keras.optimizers.SGD(0.0), ce())
  weight, mask = model.layers[1].masked_weights[0]
  poisoned = np.array(weight)
  poisoned[np.nonzero(np.asarray(mask))[0][0], np.nonzero(np.asarray(mask))[1][0]] = np.nan
  weight.assign(poisoned)
  masks = [m.copy() for _, m in pairs(model)]
  # SET: random grow scores, so only the poisoned layer is non-finite.
  set_ = kr.SETScheduler(update_freq=1, drop_fraction=0.5,
                         drop_fraction_schedule="constant", end_step=0)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model.fit(x[:32], y[:32], batch_size=32, epochs=1, callbacks=[set_], verbose=0)
  assert any("fc2/kernel" in str(w.message) for w in caught)
  assert [name for _, name in set_.skipped_layers] == ["fc2/kernel"]
  after = [m for _, m in pairs(model)]
  np.testing.assert_array_equal(after[1], masks[1])
  assert np.any(after[0] != masks[0])
  assert sum(a.sum() for a in after) == sum(m.sum() for m in masks)


def test_snip_keeps_the_most_sensitive_connections():
  x, y = data(64)
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, name="fc1"),
                            keras.layers.Dense(3, name="fc2")])
  sparse = kr.snip(model, batches(x, y), 0.8, batches=2, loss=ce())
  wrappers = [l for l in sparse.layers if isinstance(l, kr.SparseWrapper)]
  total = sum(int(np.prod(w.shape)) for l in wrappers for w, _ in l.masked_weights)
  assert sum(ones(sparse)) == total - int(0.8 * total)
  assert_inactive_zero(sparse)


@pytest.mark.parametrize("mode", ["in_step", "data"])
def test_rigl_min_fan_in_keeps_every_unit_connected(mode):
  """min_fan_in=2 on a layer RigL would otherwise cut units off: none falls below 2."""
  x, y = data()
  model = sparse_mlp(sparsity=0.9)
  model.compile(keras.optimizers.SGD(0.1, momentum=0.9), ce())
  counts = ones(model)
  source = () if mode == "in_step" else (batches(x, y),)
  rigl = kr.RigLScheduler(*source, update_freq=1, drop_fraction=0.5,
                          drop_fraction_schedule="constant", end_step=7, min_fan_in=2)
  model.fit(x, y, batch_size=32, epochs=2, callbacks=[rigl], verbose=0)
  rigl.sync_updates()
  assert rigl.updates == 8 and ones(model) == counts
  assert_inactive_zero(model)
  for _, m in pairs(model):
    floor = min(2, m.shape[0], int(m.sum()) // m.shape[-1])
    assert m.sum(axis=0).min() >= floor


@pytest.mark.skipif(backend.IS_TENSORFLOW, reason="these features exist on TensorFlow")
def test_tensorflow_only_features_say_so():
  model = sparse_mlp()
  model.compile("sgd", ce())
  x, y = data(32)
  for use in (lambda: kr.export(model, "unused"),
              lambda: kr.layers.SparseDense(4, 0.5),
              lambda: kr.sparsify(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]),
                                  0.5, storage="compressed"),
              lambda: kr.recipes.strategy.make_strategy("mirrored"),
              lambda: model.fit(x, y, verbose=0, callbacks=[
                  kr.RigLScheduler(batches(x, y), end_step=4, redistribution="momentum")])):
    with pytest.raises(backend.TensorFlowOnlyError, match=f"KERAS_BACKEND='{BACKEND}'"):
      use()


@pytest.mark.skipif(backend.NAME != "torch", reason="PyTorch's eager in-step update")
def test_rigl_in_step_refuses_jit_compile_on_torch():
  model = sparse_mlp()
  model.compile("sgd", ce(), jit_compile=True)
  x, y = data(32)
  with pytest.raises(ValueError, match="jit_compile=False"):
    model.fit(x, y, verbose=0, callbacks=[kr.RigLScheduler(update_freq=2, end_step=4)])
