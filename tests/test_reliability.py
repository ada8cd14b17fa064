"""Scheduler reliability: NaN/Inf, forward-pass side effects, step drift, restarts, compile once."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import tensorflow as tf

import keras_rigl as kr
from keras_rigl import _keras
from keras_rigl._keras import keras
from keras_rigl.methods.rigl_data import as_dataset as _as_dataset
from conftest import make_mlp, masked_pairs, sparse_ce


def sparse_mlp(sparsity=0.8, seed=0):
  keras.utils.set_random_seed(seed)
  return kr.sparsify(make_mlp(), sparsity, "uniform", seed=seed)


def wrappers(model):
  return [l for l in model.layers if isinstance(l, kr.SparseWrapper)]


class UpdateLog(keras.callbacks.Callback):
  """After the scheduler: (batch, optimizer step, scheduler's last update step)."""

  def __init__(self, scheduler):
    super().__init__()
    self.scheduler = scheduler
    self.rows = []

  def on_train_batch_begin(self, batch, logs=None):
    self.rows.append((batch, int(self.model.optimizer.iterations.numpy()),
                      self.scheduler.updates, self.scheduler.last_update_step))


def update_steps(log):
  """Steps at which an update happened, in order (one entry per update)."""
  steps, count = [], 0
  for _, _, updates, last in log.rows:
    if updates > count:
      assert updates == count + 1  # Never two updates before one batch.
      steps.append(last)
      count = updates
  return steps


# --- non-finite grow scores and weights ---------------------------------------

def test_non_finite_rigl_data_skips_the_update_and_warns(toy_data):
  x, y = toy_data
  bad_x = x.copy()
  bad_x[::7] = np.inf
  bad = tf.data.Dataset.from_tensor_slices((bad_x, y)).batch(32)
  train = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
  model = sparse_mlp()
  model.compile(keras.optimizers.SGD(0.1, momentum=0.9), sparse_ce())
  before = masked_pairs(model)
  rigl = kr.RigLScheduler(bad, update_freq=2, end_step=6)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    history = model.fit(train, epochs=1, callbacks=[rigl], verbose=0)
  messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
  assert rigl.updates == 4
  # Inf inputs make fc1's gradient x^T delta non-finite at every update.
  fc1 = [step for step, name in rigl.skipped_layers if name == "fc1/kernel"]
  assert fc1 == [0, 2, 4, 6]
  assert any("fc1/kernel" in m and "step 4" in m for m in messages), messages
  assert history.history["skipped_updates"] == [len(rigl.skipped_layers)]
  after = masked_pairs(model)
  np.testing.assert_array_equal(before[0][1], after[0][1])
  for (_, m0), (w1, m1) in zip(before, after):
    assert m0.sum() == m1.sum()
    assert np.all(w1[m1 == 0] == 0) and np.all(np.isfinite(w1))


def test_skipped_layer_keeps_mask_weights_and_slots_while_others_update(toy_dataset):
  model = sparse_mlp()
  model.compile(keras.optimizers.Adam(0.01), sparse_ce())
  model.fit(toy_dataset, epochs=1, verbose=0)  # Slots become non-zero.
  rigl = kr.RigLScheduler(toy_dataset, update_freq=1, drop_fraction=0.5,
                          drop_fraction_schedule="constant", end_step=100)
  rigl.set_model(model)
  rigl.params = {"steps": 8, "epochs": 1}
  rigl.on_train_begin()
  (w_fc2, m_fc2), = wrappers(model)[1].masked_weights
  poisoned = np.asarray(w_fc2).copy()
  poisoned[m_fc2.numpy() == 0] = 0
  poisoned.flat[np.flatnonzero(np.asarray(m_fc2))[0]] = np.nan
  w_fc2.assign(poisoned)
  state = [(np.asarray(w).copy(), np.asarray(m).copy(),
            [np.asarray(s).copy() for s in _keras.optimizer_slots(model.optimizer, w)])
           for l in wrappers(model) for w, m in l.masked_weights]
  with pytest.warns(RuntimeWarning, match="fc2/kernel"):
    rigl.on_train_batch_begin(0)
  after = [(np.asarray(w), np.asarray(m),
            [np.asarray(s) for s in _keras.optimizer_slots(model.optimizer, w)])
           for l in wrappers(model) for w, m in l.masked_weights]
  # fc2: everything as it was (NaN included), bit for bit.
  np.testing.assert_array_equal(after[1][0], state[1][0])
  np.testing.assert_array_equal(after[1][1], state[1][1])
  for s0, s1 in zip(state[1][2], after[1][2]):
    np.testing.assert_array_equal(s0, s1)
  assert ("fc2/kernel" in {n for _, n in rigl.skipped_layers}) and rigl.updates == 1


def test_set_with_nan_weights_skips_only_that_layer(toy_dataset):
  model = sparse_mlp()
  model.compile(keras.optimizers.SGD(0.0), sparse_ce())
  (w, m), = wrappers(model)[0].masked_weights
  value = np.asarray(w).copy()
  value.flat[np.flatnonzero(np.asarray(m))[0]] = np.nan
  w.assign(value)
  before = masked_pairs(model)
  set_ = kr.SETScheduler(update_freq=4, end_step=4, drop_fraction_schedule="constant")
  with pytest.warns(RuntimeWarning, match=r"fc1/kernel at step 0"):
    model.fit(toy_dataset.take(2), epochs=1, verbose=0, callbacks=[set_])
  after = masked_pairs(model)
  np.testing.assert_array_equal(before[0][1], after[0][1])  # fc1 skipped.
  assert not np.array_equal(before[1][1], after[1][1])      # fc2 moved.
  assert after[1][1].sum() == before[1][1].sum()
  assert set_.skipped_layers == [(0, "fc1/kernel")]


# --- the extra forward pass leaves model state alone -----------------------------

def bn_model(dropout=True):
  keras.utils.set_random_seed(0)
  inputs = keras.Input((12,))
  h = keras.layers.Dense(24, name="fc1")(inputs)
  h = keras.layers.BatchNormalization(name="bn")(h)
  h = keras.layers.Activation("relu")(h)
  if dropout:
    h = keras.layers.Dropout(0.2)(h)
  outputs = keras.layers.Dense(3, name="logits")(h)
  return kr.sparsify(keras.Model(inputs, outputs), 0.8, "uniform")


def bn_state(model):
  layer = model.get_layer("bn")
  return [np.asarray(v).copy() for v in layer.non_trainable_weights]


class StateAround(keras.callbacks.Callback):

  def __init__(self):
    super().__init__()
    self.states = []

  def on_train_batch_begin(self, batch, logs=None):
    self.states.append((bn_state(self.model), [m for _, m in masked_pairs(self.model)]))


@pytest.mark.parametrize("with_nan", [False, True])
def test_rigl_forward_pass_leaves_batchnorm_statistics_alone(toy_data, with_nan):
  x, y = toy_data
  rigl_x = x.copy()
  if with_nan:
    rigl_x[:32] = np.nan  # The first RigL batch is all NaN.
  rigl_data = tf.data.Dataset.from_tensor_slices((rigl_x, y)).batch(32)
  train = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
  model = bn_model()
  model.compile(keras.optimizers.SGD(0.05, momentum=0.9), sparse_ce(), metrics=["accuracy"])
  before, after = StateAround(), StateAround()
  rigl = kr.RigLScheduler(rigl_data, update_freq=3, end_step=6)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    model.fit(train, epochs=1, verbose=0, callbacks=[before, rigl, after])
  assert rigl.updates == 3
  moved = False
  for step in (0, 3, 6):
    for v0, v1 in zip(before.states[step][0], after.states[step][0]):
      np.testing.assert_array_equal(v0, v1)
    moved |= any(np.any(a != b) for a, b in zip(before.states[step][1], after.states[step][1]))
  assert moved
  if with_nan:
    assert rigl.skipped_layers and rigl.skipped_layers[0][0] == 0
  assert all(np.all(np.isfinite(v)) for v in bn_state(model))
  assert np.all(np.isfinite(model.predict(x[:8], verbose=0)))


def test_rigl_forward_pass_leaves_metrics_alone(toy_data):
  x, y = toy_data
  train = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)

  def run(callbacks):
    # Without Dropout (test_rigl_leaves_dropout_randomness_alone has it).
    model = bn_model(dropout=False)
    model.compile(keras.optimizers.SGD(0.0), sparse_ce(), metrics=["accuracy"])
    return model.fit(train, epochs=1, verbose=0, callbacks=callbacks).history

  plain = run([])
  # lr 0 and drop_fraction 0: the update changes nothing, so everything matches.
  with_rigl = run([kr.RigLScheduler(train, update_freq=2, drop_fraction=0.0, end_step=8)])
  assert plain["loss"] == pytest.approx(with_rigl["loss"], rel=1e-6)
  assert plain["accuracy"] == pytest.approx(with_rigl["accuracy"], rel=1e-6)


@pytest.mark.parametrize("grow_scores", ["step", "data"])
def test_rigl_leaves_dropout_randomness_alone(toy_data, grow_scores):
  # Neither RigL's in-step update nor its separate gradient pass changes the
  # Dropout masks training draws, in both flavours (tf_keras's stateful
  # random ops included): the losses match a run without RigL exactly.
  x, y = toy_data
  train = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)

  def run(callbacks):
    model = bn_model(dropout=True)
    model.compile(keras.optimizers.SGD(0.0), sparse_ce(), metrics=["accuracy"])
    return model.fit(train, epochs=2, verbose=0, callbacks=callbacks).history

  plain = run([])
  data = (train,) if grow_scores == "data" else ()
  # lr 0 and drop_fraction 0: the updates run but change nothing.
  rigl = kr.RigLScheduler(*data, update_freq=2, drop_fraction=0.0, end_step=12)
  with_rigl = run([rigl])
  assert rigl.updates == 7
  np.testing.assert_array_equal(plain["loss"], with_rigl["loss"])
  np.testing.assert_array_equal(plain["accuracy"], with_rigl["accuracy"])


# --- updates at the optimizer steps the schedule names ----------------------------

def test_updates_follow_optimizer_steps_when_mixed_precision_skips_steps(toy_data):
  x, y = toy_data
  train = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)  # 32 batches.
  policy = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    keras.utils.set_random_seed(0)
    model = kr.sparsify(keras.Sequential([
        keras.Input((12,)), keras.layers.Dense(16, activation="relu", name="fc1"),
        keras.layers.Dense(3, dtype="float32", name="logits")]), 0.8, "uniform")
  finally:
    keras.mixed_precision.set_global_policy(policy)
  inner = keras.optimizers.SGD(0.01)
  # A huge initial loss scale overflows the first steps, which are skipped.
  if _keras.IS_KERAS3:
    optimizer = keras.optimizers.LossScaleOptimizer(inner, initial_scale=2.0 ** 40)
  else:
    optimizer = keras.mixed_precision.LossScaleOptimizer(inner, initial_scale=2.0 ** 40)
  model.compile(optimizer, sparse_ce())
  rigl = kr.RigLScheduler(train, update_freq=5, end_step=40)
  log = UpdateLog(rigl)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # RigL's own scaled gradients overflow too.
    model.fit(train, epochs=2, verbose=0, callbacks=[rigl, log])
  last_step = int(model.optimizer.iterations.numpy())
  expected = [s for s in range(0, min(last_step - 1, 40) + 1, 5)]
  assert update_steps(log) == expected
  # Each update ran exactly when the optimizer step reached it.
  for _, step, updates, last in log.rows:
    assert last is None or last <= step
  if _keras.IS_KERAS3:
    assert last_step < 64  # Steps were really skipped.


class Interrupt(keras.callbacks.Callback):

  def __init__(self, at_step):
    super().__init__()
    self.at_step = at_step

  def on_train_batch_end(self, batch, logs=None):
    if int(self.model.optimizer.iterations.numpy()) == self.at_step:
      raise RuntimeError("interrupted")


@pytest.mark.parametrize("interrupt_at", [19, 22])
def test_backup_and_restore_mid_epoch_gives_the_uninterrupted_run(toy_data, tmp_path, interrupt_at):
  x, y = toy_data
  train = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)  # 8 steps an epoch.

  def make():
    model = sparse_mlp()
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), sparse_ce())
    return model

  def rigl():
    return kr.RigLScheduler(train, update_freq=5, end_step=30)

  whole = make()
  whole_rigl = rigl()
  whole_log = UpdateLog(whole_rigl)
  whole.fit(train, epochs=4, verbose=0, callbacks=[whole_rigl, whole_log])
  backup = str(tmp_path / "backup")
  model = make()
  with pytest.raises(RuntimeError, match="interrupted"):
    model.fit(train, epochs=4, verbose=0, callbacks=[
        keras.callbacks.BackupAndRestore(backup, save_freq=6), rigl(),
        Interrupt(interrupt_at)])
  resumed = make()  # A new process: fresh model and callbacks.
  resumed_rigl = rigl()
  log = UpdateLog(resumed_rigl)
  resumed.fit(train, epochs=4, verbose=0, callbacks=[
      keras.callbacks.BackupAndRestore(backup, save_freq=6), resumed_rigl, log])
  assert log.rows[0][1] == 18  # Restored at the backup of step 18.
  # No update skipped or repeated, and RigL resumes at the same batch.
  assert update_steps(whole_log) == [0, 5, 10, 15, 20, 25, 30]
  assert update_steps(log) == [20, 25, 30]
  assert resumed_rigl._consumed == whole_rigl._consumed == 7


# --- compiled once; one iterator across fit calls --------------------------------

def test_one_trace_and_one_iterator_across_fit_calls(toy_data):
  x, y = toy_data
  train = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)  # 8 steps.

  def grads():  # A new object per run, as in a new process (shuffle state restarts).
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(256, seed=1).batch(32)

  def make():
    model = sparse_mlp()
    model.compile(keras.optimizers.Adam(0.01), sparse_ce())
    return model

  one = make()
  rigl_one = kr.RigLScheduler(grads(), update_freq=3, end_step=33)
  one.fit(train, epochs=5, verbose=0, callbacks=[rigl_one])
  many = make()
  rigl_many = kr.RigLScheduler(grads(), update_freq=3, end_step=33)
  iterators = []
  for epoch in range(5):
    many.fit(train, epochs=epoch + 1, initial_epoch=epoch, verbose=0, callbacks=[rigl_many])
    iterators.append(rigl_many._iterator)
  assert rigl_one._trace_count == 1
  assert rigl_many._trace_count == 1
  assert all(it is iterators[0] for it in iterators)
  assert rigl_one.updates == rigl_many.updates == 12
  for (w1, m1), (w2, m2) in zip(masked_pairs(one), masked_pairs(many)):
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_allclose(w1, w2, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("scheduler", ["set", "pruning"])
def test_other_schedulers_trace_once(toy_dataset, scheduler):
  if scheduler == "set":
    model = sparse_mlp()
    callback = kr.SETScheduler(update_freq=2, end_step=20)
  else:
    keras.utils.set_random_seed(0)
    model = kr.sparsify(make_mlp(), 0.8, "uniform", mask_init="dense")
    callback = kr.MagnitudePruningScheduler(0.0, 0.5, 0, 20, update_freq=2)
  model.compile(keras.optimizers.SGD(0.1, momentum=0.9), sparse_ce())
  for epoch in range(3):
    model.fit(toy_dataset, epochs=epoch + 1, initial_epoch=epoch, verbose=0,
              callbacks=[callback])
  assert callback.updates == 11
  assert callback._trace_count == 1


# --- RigL data ------------------------------------------------------------------

def test_short_rigl_data_is_repeated_and_never_ends_training(toy_dataset):
  one_batch = toy_dataset.take(1)
  model = sparse_mlp()
  model.compile(keras.optimizers.SGD(0.1), sparse_ce())
  rigl = kr.RigLScheduler(one_batch, update_freq=2, end_step=14, grad_accumulation_steps=3)
  history = model.fit(toy_dataset, epochs=2, verbose=0, callbacks=[rigl])
  assert len(history.history["loss"]) == 2
  assert int(model.optimizer.iterations.numpy()) == 16
  assert rigl.updates == 8


def test_python_iterator_is_cycled_through_all_its_batches():
  batches = ((np.full((2, 3), i, "float32"), np.full((2,), i, "int32")) for i in range(3))
  dataset = _as_dataset(batches)
  seen = [int(x[0, 0]) for x, _ in dataset.repeat().take(8)]
  assert seen == [0, 1, 2, 0, 1, 2, 0, 1]
  # A list of batches of different sizes (a smaller last batch) works too.
  listed = _as_dataset([(np.ones((4, 3), "float32"), np.ones(4, "int32")),
                        (np.ones((1, 3), "float32"), np.ones(1, "int32"))])
  assert [int(x.shape[0]) for x, _ in listed.repeat(2)] == [4, 1, 4, 1]


def test_generator_rigl_data_in_fit_uses_every_batch(toy_data):
  x, y = toy_data
  train = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
  model = sparse_mlp()
  model.compile(keras.optimizers.SGD(0.1), sparse_ce())
  gen = ((x[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32))
  rigl = kr.RigLScheduler(gen, update_freq=1, end_step=20)
  model.fit(train, epochs=3, verbose=0, callbacks=[rigl])
  assert rigl.updates == 21 and rigl._consumed == 21


# --- flavour switch by tfmot ------------------------------------------------------

def test_importing_tfmot_first_warns_about_the_flavour():
  env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
  env["PYTHONPATH"] = os.getcwd()
  code = ("import warnings; warnings.simplefilter('always'); "
          "import tensorflow_model_optimization; import keras_rigl; "
          "print(keras_rigl.keras_flavour)")
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                       text=True, timeout=300, check=True)
  assert out.stdout.strip().endswith("tf_keras")
  assert "import keras_rigl before tensorflow_model_optimization" in out.stderr
  # Set on purpose before Python starts: no warning.
  env["TF_USE_LEGACY_KERAS"] = "1"
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                       text=True, timeout=300, check=True)
  assert "import keras_rigl before" not in out.stderr


@pytest.mark.skipif(_keras.IS_KERAS3, reason="tf_keras legacy optimizers only exist in tf_keras")
def test_tf_keras_legacy_optimizer_slots_found_after_the_first_step(toy_dataset):
  model = sparse_mlp()
  model.compile(keras.optimizers.legacy.SGD(0.1, momentum=0.9), sparse_ce())
  rigl = kr.RigLScheduler(toy_dataset, update_freq=3, end_step=12)
  model.fit(toy_dataset, epochs=2, verbose=0, callbacks=[rigl])
  assert rigl.updates == 5
  # Legacy optimizers create their slots with the first step: one more trace then.
  assert rigl._trace_count == 2
  assert all(len(t.slots) == 1 for t in rigl._targets)
  for w, m in masked_pairs(model):
    assert np.all(w[m == 0] == 0)
