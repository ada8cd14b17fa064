"""RigLScheduler / SETScheduler / MagnitudePruningScheduler behaviour."""

import numpy as np
import pytest
import tensorflow as tf

import keras_rigl as kr
from keras_rigl import _keras
from keras_rigl._keras import keras
from keras_rigl.schedules import drop_fraction_at, polynomial_sparsity
from conftest import make_mlp, masked_pairs, sparse_ce


def sparse_mlp(sparsity=0.8, seed=0, mask_init="random", distribution="uniform"):
  keras.utils.set_random_seed(seed)
  return kr.sparsify(make_mlp(), sparsity, distribution, seed=seed, mask_init=mask_init)


def wrappers(model):
  return [l for l in model.layers if isinstance(l, kr.SparseWrapper)]


class Snapshot(keras.callbacks.Callback):
  """Records weights, masks and optimizer slots when each step is about to start.

  Placed before the scheduler in the callback list it sees the state before an
  update; placed after it, the state right after.
  """

  def __init__(self):
    super().__init__()
    self.states = []

  def on_train_batch_begin(self, batch, logs=None):
    state = []
    for layer in wrappers(self.model):
      for w, m in layer.masked_weights:
        slots = _keras.optimizer_slots(self.model.optimizer, w)
        state.append((np.asarray(w).copy(), np.asarray(m).copy(),
                      [np.asarray(s).copy() for s in slots]))
    self.states.append(state)


# --- schedules ---------------------------------------------------------------

def test_drop_fraction_schedules():
  assert drop_fraction_at(0, 0.3, "cosine", 0, 100) == pytest.approx(0.3)
  assert drop_fraction_at(50, 0.3, "cosine", 0, 100) == pytest.approx(0.15)
  assert drop_fraction_at(100, 0.3, "cosine", 0, 100) == pytest.approx(0.0)
  assert drop_fraction_at(70, 0.3, "constant", 0, 100) == 0.3
  assert drop_fraction_at(50, 0.4, "exponential", 0, 100) == pytest.approx(0.2)
  assert drop_fraction_at(50, 0.4, "exponential_2", 0, 100) == pytest.approx(0.1)
  assert drop_fraction_at(7, 0.4, lambda step: step / 100, 0, 100) == pytest.approx(0.07)


def test_polynomial_sparsity():
  assert polynomial_sparsity(0, 0.0, 0.9, 10, 110) == 0.0
  assert polynomial_sparsity(60, 0.0, 0.9, 10, 110) == pytest.approx(0.9 - 0.9 * 0.5 ** 3)
  assert polynomial_sparsity(500, 0.0, 0.9, 10, 110) == pytest.approx(0.9)


# --- RigL ----------------------------------------------------------------------

def test_rigl_moves_masks_keeps_counts_and_logs(toy_dataset):
  model = sparse_mlp()
  model.compile(keras.optimizers.SGD(0.1, momentum=0.9), sparse_ce())
  before = masked_pairs(model)
  rigl = kr.RigLScheduler(toy_dataset, update_freq=4, drop_fraction=0.3)
  history = model.fit(toy_dataset, epochs=2, callbacks=[rigl], verbose=0)
  after = masked_pairs(model)
  assert rigl.updates == 4  # 16 steps, end_step = 12: updates at 0, 4, 8, 12.
  assert rigl.last_update_step == 12
  for (_, m0), (w1, m1) in zip(before, after):
    assert m0.sum() == m1.sum()
    assert np.all(w1[m1 == 0] == 0)
  assert any(np.any(m0 != m1) for (_, m0), (_, m1) in zip(before, after))
  assert "drop_fraction" in history.history and "mask_change" in history.history
  assert history.history["drop_fraction"][-1] == 0.0  # Past end_step.
  assert 0.0 < max(history.history["mask_change"]) < 1.0


def test_rigl_grows_largest_dense_gradient():
  keras.utils.set_random_seed(3)
  inputs = keras.Input((6,))
  layer = kr.SparseWrapper(keras.layers.Dense(4, use_bias=False), sparsity=0.5)
  model = keras.Model(inputs, layer(inputs))
  model.compile(keras.optimizers.SGD(0.0), "mse")  # lr 0: weights do not move.
  r = np.random.default_rng(0)
  x, y = r.normal(size=(8, 6)).astype("float32"), r.normal(size=(8, 4)).astype("float32")
  data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
  (weight, mask), = layer.masked_weights
  w0, m0 = np.asarray(weight).copy(), np.asarray(mask).copy()
  kernel = tf.constant(w0 * m0)
  with tf.GradientTape() as tape:
    tape.watch(kernel)
    loss = tf.reduce_mean(tf.square(y - x @ kernel))
  dense_grad = tape.gradient(loss, kernel)
  expected, _ = kr.update_mask(m0, w0, tf.abs(dense_grad), 0.5)
  # One step: the update due at step 0 runs before it (the one due after it
  # would run at the start of a next fit).
  rigl = kr.RigLScheduler(data, update_freq=1, drop_fraction=0.5,
                          drop_fraction_schedule="constant", end_step=1)
  model.fit(data, epochs=1, callbacks=[rigl], verbose=0)
  assert rigl.updates == 1
  np.testing.assert_array_equal(np.asarray(mask), expected.numpy())
  assert np.any(np.asarray(mask) != m0)


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
def test_grown_weights_start_at_zero_with_zero_slots(toy_dataset, optimizer):
  model = sparse_mlp()
  opt = (keras.optimizers.SGD(0.1, momentum=0.9) if optimizer == "sgd_momentum"
         else keras.optimizers.Adam(0.01))
  model.compile(opt, sparse_ce())
  before, after = Snapshot(), Snapshot()
  # The only update is due after step 6, i.e. just before step 7 starts.
  rigl = kr.RigLScheduler(toy_dataset, update_freq=6, drop_fraction=0.3,
                          drop_fraction_schedule="constant", begin_step=6, end_step=6)
  model.fit(toy_dataset, epochs=1, callbacks=[before, rigl, after], verbose=0)
  assert rigl.updates == 1
  grown_any = False
  for (w0, m0, slots0), (w1, m1, slots1) in zip(before.states[6], after.states[6]):
    assert len(slots0) == len(slots1) == (1 if optimizer == "sgd_momentum" else 2)
    grown = (m1 == 1) & (m0 == 0)
    kept = (m1 == 1) & (m0 == 1)
    changed = m1 != m0
    grown_any |= grown.any()
    assert np.all(w1[grown] == 0)
    np.testing.assert_array_equal(w1[kept], w0[kept])
    for s0, s1 in zip(slots0, slots1):
      assert np.all(s1[changed] == 0)
      np.testing.assert_array_equal(s1[kept], s0[kept])
      assert np.any(s0[changed] != 0)  # The reset did something.
  assert grown_any


def test_static_shape_update_matches_dynamic(toy_dataset):
  def run(static):
    model = sparse_mlp()
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), sparse_ce())
    rigl = kr.RigLScheduler(toy_dataset, update_freq=4, end_step=12)
    rigl.static_shapes = static  # What TPUStrategy selects automatically.
    model.fit(toy_dataset, epochs=2, callbacks=[rigl], verbose=0)
    return masked_pairs(model), rigl
  dynamic, _ = run(False)
  static, rigl = run(True)
  assert all(t.max_update is not None and t.max_update > 0 for t in rigl._targets)
  for (w1, m1), (w2, m2) in zip(dynamic, static):
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_allclose(w1, w2, rtol=1e-6, atol=1e-6)


def test_grow_init_random_normal_scaled_to_layer(toy_dataset):
  model = sparse_mlp()
  model.compile(keras.optimizers.SGD(0.1), sparse_ce())
  before, after = Snapshot(), Snapshot()
  rigl = kr.RigLScheduler(toy_dataset, update_freq=6, drop_fraction=0.3, begin_step=6,
                          end_step=6, drop_fraction_schedule="constant",
                          grow_init="random_normal")
  model.fit(toy_dataset, epochs=1, callbacks=[before, rigl, after], verbose=0)
  (w0, m0, _), = before.states[6][:1]
  (w1, m1, _), = after.states[6][:1]
  grown = (m1 == 1) & (m0 == 0)
  kept = (m1 == 1) & (m0 == 1)
  assert grown.sum() > 10 and np.all(w1[grown] != 0)
  ratio = w1[grown].std() / np.sqrt(np.mean(w0[kept] ** 2))
  assert 0.5 < ratio < 1.6


def test_set_is_deterministic_and_seeded(toy_dataset):
  def run(seed):
    model = sparse_mlp()
    model.compile(keras.optimizers.SGD(0.0), sparse_ce())
    model.fit(toy_dataset, epochs=1, verbose=0,
              callbacks=[kr.SETScheduler(update_freq=4, end_step=8, seed=seed)])
    return [m for _, m in masked_pairs(model)]
  first, again, other = run(1), run(1), run(2)
  assert all(np.array_equal(a, b) for a, b in zip(first, again))
  assert any(not np.array_equal(a, b) for a, b in zip(first, other))
  initial = [m for _, m in masked_pairs(sparse_mlp())]
  assert all(a.sum() == b.sum() for a, b in zip(first, initial))


def test_mirrored_strategy_replicas_identical_and_match_single_device(
    toy_data, mirrored_strategy):
  x, y = toy_data
  def run(strategy):
    with strategy.scope():
      model = sparse_mlp()
      model.compile(keras.optimizers.SGD(0.1, momentum=0.9), sparse_ce())
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32, drop_remainder=True)
    model.fit(data, epochs=2, verbose=0,
              callbacks=[kr.RigLScheduler(data, update_freq=4, end_step=12)])
    return model
  mirrored = run(mirrored_strategy)
  single = run(tf.distribute.OneDeviceStrategy("/cpu:0"))

  def replica_values(variable):
    inner = getattr(variable, "value", variable) if _keras.IS_KERAS3 else variable
    return [np.asarray(v) for v in inner.values]

  for layer in wrappers(mirrored):
    for w, m in layer.masked_weights:
      for variable in [w, m] + _keras.optimizer_slots(mirrored.optimizer, w):
        values = replica_values(variable)
        assert len(values) == 2
        np.testing.assert_array_equal(values[0], values[1])
  for (_, m1), (_, m2) in zip(masked_pairs(single), masked_pairs(mirrored)):
    overlap = ((m1 == 1) & (m2 == 1)).sum() / m1.sum()
    assert overlap > 0.9


def test_resume_gives_same_masks_and_weights(toy_data, tmp_path):
  x, y = toy_data
  train = tf.data.Dataset.from_tensor_slices((x, y)).batch(32, drop_remainder=True)

  def grads_data():  # Fresh object per run: shuffle order restarts like a new process.
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(256, seed=3).batch(
        64, drop_remainder=True)

  def make():
    model = sparse_mlp()
    model.compile(keras.optimizers.Adam(0.01), sparse_ce())
    return model

  def rigl():
    return kr.RigLScheduler(grads_data(), update_freq=3, end_step=28)

  whole = make()
  whole.fit(train, epochs=4, callbacks=[rigl()], verbose=0)
  first = make()
  first.fit(train, epochs=2, callbacks=[rigl()], verbose=0)
  path = str(tmp_path / ("model.keras" if _keras.IS_KERAS3 else "model.h5"))
  first.save(path)
  resumed = keras.models.load_model(path)
  resumed.fit(train, epochs=4, initial_epoch=2, callbacks=[rigl()], verbose=0)
  for (w1, m1), (w2, m2) in zip(masked_pairs(whole), masked_pairs(resumed)):
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_allclose(w1, w2, rtol=1e-6, atol=1e-7)


def test_iterator_and_grad_accumulation(toy_data):
  x, y = toy_data
  batches = ((x[i:i + 32], y[i:i + 32]) for i in range(0, 10 ** 6, 32) if i + 32 <= 256)
  model = sparse_mlp()
  model.compile(keras.optimizers.SGD(0.1), sparse_ce())
  data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32, drop_remainder=True)
  rigl = kr.RigLScheduler(batches, update_freq=4, end_step=8, grad_accumulation_steps=2)
  model.fit(data, epochs=1, verbose=0, callbacks=[rigl])
  assert rigl.updates == 2


# --- magnitude pruning ----------------------------------------------------------

def test_magnitude_pruning_reaches_each_layer_target(toy_dataset):
  model = sparse_mlp(0.8, mask_init="dense", distribution="erk")
  targets = [l.target_sparsity for l in wrappers(model)]
  assert all(l.sparsity == 0.0 for l in wrappers(model))
  model.compile(keras.optimizers.SGD(0.1), sparse_ce())
  pruning = kr.MagnitudePruningScheduler(0.0, None, begin_step=2, end_step=12, update_freq=2)
  history = model.fit(toy_dataset, epochs=2, callbacks=[pruning], verbose=0)
  for layer, target in zip(wrappers(model), targets):
    (w, m), = layer.masked_weights
    size = m.size if hasattr(m, "size") else np.asarray(m).size
    assert int(np.asarray(m).sum()) == size - int(np.floor(target * size))
    assert np.all(np.asarray(w)[np.asarray(m) == 0] == 0)
  assert max(history.history["mask_change"]) > 0


def test_magnitude_pruning_with_external_schedule(toy_dataset):
  if _keras.IS_KERAS3:
    schedule = lambda step: (step % 4 == 0, 0.5)  # Any callable step -> (prune?, s).
  else:
    import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=4)
  model = sparse_mlp(0.8, mask_init="dense")
  model.compile(keras.optimizers.SGD(0.1), sparse_ce())
  model.fit(toy_dataset, epochs=1, verbose=0,
            callbacks=[kr.MagnitudePruningScheduler(schedule=schedule)])
  for layer in wrappers(model):
    assert layer.sparsity == pytest.approx(0.5, abs=0.01)


# --- errors ------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(update_freq=0), "update_freq"),
    (dict(update_freq=2.5), "update_freq"),
    (dict(drop_fraction=1.5), "drop_fraction"),
    (dict(drop_fraction_schedule="linear"), "drop_fraction_schedule"),
    (dict(drop_fraction_schedule="exponential_x"), "exponential"),
    (dict(grow_init="ones"), "grow_init"),
    (dict(begin_step=10, end_step=5), "end_step"),
    (dict(grad_accumulation_steps=0), "grad_accumulation_steps"),
    (dict(begin_step=-1), "begin_step"),
])
def test_bad_arguments(toy_dataset, kwargs, message):
  with pytest.raises(ValueError, match=message):
    kr.RigLScheduler(toy_dataset, **kwargs)


def test_bad_data():
  with pytest.raises(ValueError, match="numpy"):
    kr.RigLScheduler((np.zeros((4, 2)), np.zeros(4)))
  with pytest.raises(ValueError, match="update_freq=42"):
    kr.RigLScheduler(42)


def test_errors_at_fit_time(toy_dataset):
  dense = make_mlp()
  dense.compile("sgd", sparse_ce())
  with pytest.raises(ValueError, match="SparseWrapper"):
    dense.fit(toy_dataset, epochs=1, verbose=0, callbacks=[kr.RigLScheduler(toy_dataset)])
  model = sparse_mlp()
  model.compile("sgd", sparse_ce(), steps_per_execution=3)
  with pytest.raises(ValueError, match="steps_per_execution"):
    model.fit(toy_dataset, epochs=1, verbose=0,
              callbacks=[kr.RigLScheduler(toy_dataset, update_freq=4)])
  model = sparse_mlp()
  model.compile("sgd", sparse_ce())
  unknown_length = toy_dataset.filter(lambda x, y: True)  # Keras cannot count it.
  with pytest.raises(ValueError, match="end_step"):
    model.fit(unknown_length, epochs=1, verbose=0,
              callbacks=[kr.RigLScheduler(toy_dataset, end_step=None)])


def test_pruning_bad_arguments():
  with pytest.raises(ValueError, match="final_sparsity"):
    kr.MagnitudePruningScheduler(0.0, 1.0)
  with pytest.raises(ValueError, match="schedule"):
    kr.MagnitudePruningScheduler(schedule=3)


# --- docstring examples ----------------------------------------------------------

@pytest.mark.parametrize("module_name", ["methods.base", "methods.rigl", "methods.set", "methods.pruning", "schedules", "masks"])
def test_docstring_examples_run(module_name):
  import doctest  # pylint: disable=g-import-not-at-top
  import importlib  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f"keras_rigl.{module_name}")
  result = doctest.testmod(module, verbose=False)
  assert result.attempted > 0 and result.failed == 0
