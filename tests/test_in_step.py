"""RigL's update inside the compiled train step (RigLScheduler without data)."""

import numpy as np
import pytest
import tensorflow as tf

import keras_rigl as kr
from keras_rigl import _keras
from keras_rigl._keras import keras
from conftest import make_mlp, masked_pairs, shared_mirrored_strategy, sparse_ce


def _data(n=256, seed=1):
  r = np.random.default_rng(seed)
  x = r.normal(size=(n, 12)).astype("float32")
  y = x[:, :3].argmax(axis=1).astype("int32")
  return x, y


def _dataset(batch=32, n=256):
  x, y = _data(n)
  return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True)


def _model(strategy=None, lr=0.05, jit_compile=False, steps_per_execution=1, seed=0,
           optimizer=None):
  strategy = strategy or tf.distribute.get_strategy()
  with strategy.scope():
    keras.utils.set_random_seed(seed)
    model = kr.sparsify(make_mlp(), 0.8, "uniform", seed=seed)
    optimizer = optimizer or keras.optimizers.SGD(lr, momentum=0.9)
    model.compile(optimizer, sparse_ce(), jit_compile=jit_compile,
                  steps_per_execution=steps_per_execution)
  return model


def _wrappers(model):
  return [l for l in model.layers if isinstance(l, kr.SparseWrapper)]


def _masks(model):
  return [m for _, m in masked_pairs(model)]


def _replica_values(variable):
  value = variable.value if _keras.IS_KERAS3 else variable
  return [np.asarray(v) for v in value.values]


def _hand_gradient(model, x, y):
  """d loss / d (W * M) of the compiled loss on (x, y), computed by hand."""
  wrappers = _wrappers(model)
  effective = [tf.constant(np.asarray(w) * np.asarray(m))
               for layer in wrappers for w, m in layer.masked_weights]
  biases = [tf.constant(np.asarray(layer.layer.bias)) for layer in wrappers]
  with tf.GradientTape() as tape:
    tape.watch(effective)
    h = tf.constant(x)
    for i, (e, b) in enumerate(zip(effective, biases)):
      h = tf.matmul(h, e) + b
      if i < len(effective) - 1:
        h = tf.nn.relu(h)
    loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
        tf.constant(y), h, from_logits=True))
  return [g.numpy() for g in tape.gradient(loss, effective)]


def _expected_after_first_update(model, x, y, drop_fraction=0.3):
  pairs = masked_pairs(model)
  grads = _hand_gradient(model, x, y)
  return [kr.update_mask(m, w, np.abs(g), drop_fraction)[0].numpy()
          for (w, m), g in zip(pairs, grads)]


@pytest.mark.parametrize("distributed", [False, True], ids=["one_device", "mirrored"])
def test_grow_scores_are_the_step_gradient(distributed):
  strategy = shared_mirrored_strategy() if distributed else None
  model = _model(strategy, lr=0.0)
  x, y = _data(64)
  expected = _expected_after_first_update(model, x, y)
  rigl = kr.RigLScheduler(update_freq=10, end_step=100)
  train = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
  model.fit(train, epochs=1, callbacks=[rigl], verbose=0)
  assert rigl.updates == 1 and rigl.last_update_step == 0
  got = _masks(model)
  for e, g in zip(expected, got):
    np.testing.assert_array_equal(g, e)
    assert g.sum() == e.sum()
  assert any((g != m).any() for g, m in zip(got, [m for _, m in masked_pairs(
      _model(strategy, lr=0.0))]))


def _host_and_step_masks(update_freq, end_step, epochs, **step_kwargs):
  """Final masks of host-scheduled (data=training batches) and in-step RigL.

  Learning rate 0 keeps the weights where the updates leave them, so both
  see the same weights and the same batch at every update.
  """
  train = _dataset()
  host_model = _model(lr=0.0)
  host = kr.RigLScheduler(train, update_freq=update_freq, end_step=end_step)
  # The host update at step t reads batch (updates so far) of `data`: with
  # update_freq=1 that is batch t, the batch the train step t uses.
  host_model.fit(train, epochs=epochs, callbacks=[host], verbose=0)
  step_model = _model(lr=0.0, **step_kwargs)
  step = kr.RigLScheduler(update_freq=update_freq, end_step=end_step)
  step_model.fit(train, epochs=epochs, callbacks=[step], verbose=0)
  return host, _masks(host_model), step, _masks(step_model)


def test_compiled_update_equals_host_update():
  host, host_masks, step, step_masks = _host_and_step_masks(1, 11, 2)
  assert host.updates == step.updates == 12
  for h, s in zip(host_masks, step_masks):
    np.testing.assert_array_equal(s, h)


@pytest.mark.parametrize("steps_per_execution", [3, 5])
def test_jit_and_steps_per_execution_update_on_the_due_steps(steps_per_execution):
  # Executions of 3 and 5 steps with an update every step up to step 11: N
  # is no divisor of the 8 steps of an epoch, and updates fall inside them.
  host, host_masks, step, step_masks = _host_and_step_masks(
      1, 11, 2, jit_compile=True, steps_per_execution=steps_per_execution)
  assert step.updates == 12 and step.last_update_step == 11
  for h, s in zip(host_masks, step_masks):
    np.testing.assert_array_equal(s, h)


def test_update_steps_inside_long_executions():
  # update_freq 3 < steps_per_execution 8 (one execution per epoch).
  model = _model(jit_compile=True, steps_per_execution=8)
  rigl = kr.RigLScheduler(update_freq=3, end_step=13)
  model.fit(_dataset(), epochs=2, callbacks=[rigl], verbose=0)
  assert rigl.updates == 5 and rigl.last_update_step == 12  # 0, 3, 6, 9, 12.
  for w, m in masked_pairs(model):
    assert np.count_nonzero(w[m == 0]) == 0


def test_mirrored_replicas_identical_and_equal_one_device():
  strategy = shared_mirrored_strategy()
  train = _dataset(batch=32)
  distributed = _model(strategy, lr=0.05)
  rigl = kr.RigLScheduler(update_freq=2, end_step=14)
  distributed.fit(train, epochs=2, callbacks=[rigl], verbose=0)
  assert rigl.updates == 8
  initial = _masks(_model(lr=0.05))
  for layer in _wrappers(distributed):
    for w, m in layer.masked_weights:
      masks = _replica_values(m)
      weights = _replica_values(w)
      for other in masks[1:]:
        np.testing.assert_array_equal(other, masks[0])
      for other in weights[1:]:
        np.testing.assert_array_equal(other, weights[0])
      assert np.count_nonzero(weights[0][masks[0] == 0]) == 0
  assert sum(m.sum() for m in _masks(distributed)) == sum(m.sum() for m in initial)
  assert any((a != b).any() for a, b in zip(_masks(distributed), initial))


def test_counts_exact_and_slots_reset_with_adam():
  model = _model(optimizer=keras.optimizers.Adam(1e-2))
  before = [m.sum(axis=None) for m in _masks(model)]
  rigl = kr.RigLScheduler(update_freq=4, end_step=20)
  model.fit(_dataset(), epochs=3, callbacks=[rigl], verbose=0)
  assert [m.sum() for m in _masks(model)] == before
  for layer in _wrappers(model):
    for w, m in layer.masked_weights:
      mask = np.asarray(m)
      assert np.count_nonzero(np.asarray(w)[mask == 0]) == 0
      for slot in _keras.optimizer_slots(model.optimizer, w):
        assert np.count_nonzero(np.asarray(slot)[mask == 0]) == 0


def test_no_python_work_between_updates():
  model = _model()
  rigl = kr.RigLScheduler(update_freq=4, end_step=40)
  calls = []
  original = rigl._update_step

  def counted(*args):
    calls.append(1)
    return original(*args)

  rigl._update_step = counted
  rigl._run_update = lambda step: pytest.fail("host update ran")
  train = _dataset()
  model.fit(train, epochs=1, callbacks=[rigl], verbose=0)
  traced = len(calls)
  assert traced >= 1
  for _ in range(3):  # Later fits reuse the traced train step.
    model.fit(train, epochs=1, callbacks=[rigl], verbose=0)
  assert len(calls) == traced
  assert rigl.updates == 8  # Steps 0, 4, ..., 28 of 32.


def test_disabled_outside_its_fit_and_resolves_end_step_once():
  model = _model()
  rigl = kr.RigLScheduler(update_freq=2)  # end_step: 75% of the first fit.
  train = _dataset()
  model.fit(train, epochs=2, callbacks=[rigl], verbose=0)  # 16 steps -> end 12.
  assert rigl.updates == 7 and rigl.last_update_step == 12
  masks = _masks(model)
  model.fit(train, epochs=1, verbose=0)  # No scheduler: no update.
  for a, b in zip(masks, _masks(model)):
    np.testing.assert_array_equal(a, b)
  model.fit(train, epochs=1, callbacks=[rigl], verbose=0)
  assert rigl.updates == 7  # Still the first fit's end step.


def test_non_finite_gradient_skips_the_update_with_a_warning():
  model = _model(lr=0.0)
  x, y = _data(64)
  x[0, 0] = np.nan
  before = _masks(model)
  rigl = kr.RigLScheduler(update_freq=1, end_step=0)
  with pytest.warns(RuntimeWarning, match="skipped mask updates"):
    model.fit(x, y, batch_size=64, epochs=1, callbacks=[rigl], verbose=0)
  skipped = {name for _, name in rigl.skipped_layers}
  assert "fc1/kernel" in skipped  # NaN inputs: fc1's gradient is NaN.
  names = [f"{l.layer.name}/{k}" for l in _wrappers(model) for k in l.weight_keys]
  for name, a, b in zip(names, before, _masks(model)):
    assert a.sum() == b.sum()
    if name in skipped:
      np.testing.assert_array_equal(a, b)


def test_resume_from_checkpoint_is_exact(tmp_path):
  train = _dataset()

  def run(epochs, restore=None, save=None):
    model = _model()
    rigl = kr.RigLScheduler(update_freq=3, end_step=20)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    if restore:
      model.optimizer.build(model.trainable_variables)
      checkpoint.read(restore).assert_existing_objects_matched()
    model.fit(train, epochs=epochs, callbacks=[rigl], verbose=0)
    if save:
      return checkpoint.write(save)
    return masked_pairs(model)

  straight = run(3)
  path = run(1, save=str(tmp_path / "ckpt"))
  resumed = run(2, restore=path)
  for (w1, m1), (w2, m2) in zip(straight, resumed):
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(w1, w2)


def test_bad_arguments_without_data():
  with pytest.raises(ValueError, match="update_freq=100"):
    kr.RigLScheduler(100)
  with pytest.raises(ValueError, match="redistribution"):
    kr.RigLScheduler(redistribution="momentum")
  with pytest.raises(ValueError, match="grad_accumulation_steps"):
    kr.RigLScheduler(grad_accumulation_steps=2)
