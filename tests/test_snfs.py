"""SNFSScheduler (sparse momentum) and RigLScheduler(redistribution=...)."""

import numpy as np
import pytest
import tensorflow as tf

import keras_rigl as kr
from keras_rigl import _keras
from keras_rigl._keras import keras
from keras_rigl.redistribution import bounded_regrowth, redistributed_drops
from keras_rigl.wrapper import capture_effective_weights
from conftest import make_mlp, masked_pairs, sparse_ce


def sparse_mlp(sparsity=0.8, distribution="uniform"):
  keras.utils.set_random_seed(0)
  return kr.sparsify(make_mlp(), sparsity, distribution)


def wrappers(model):
  return [l for l in model.layers if isinstance(l, kr.SparseWrapper)]


def taps(model):
  return [tap for layer in wrappers(model) for tap in layer.gradient_taps]


def counts(model):
  return [int(m.sum()) for _, m in masked_pairs(model)]


def dense_gradients(model, x, y):
  """dL/d(W * M) of every masked weight, by hand (what the taps should see).

  A shared layer's uses add up, in the order the weights first appear.
  """
  with tf.GradientTape() as tape:
    with capture_effective_weights() as records:
      pred = model(x, training=True)
    loss = sparse_ce()(y, pred)
  totals = {}
  for (layer, index, _), grad in zip(records, tape.gradient(loss, [r[2] for r in records])):
    key = (id(layer), index)
    totals[key] = totals.get(key, 0.0) + np.asarray(grad)
  return list(totals.values())


def fit_one_batch(model, x, y, callback):
  model.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False,
            callbacks=[callback])


def expected_masks(masks, weights, momenta, fraction, grow_counts=None, drop_counts=None):
  """Numpy reference of one SNFS update (no ties in random data)."""
  results = []
  for i, (mask, w, m) in enumerate(zip(masks, weights, momenta)):
    mask, w, m = mask.ravel(), np.abs(w.ravel()), np.abs(m.ravel())
    active = np.flatnonzero(mask > 0)
    n_drop = int(np.float32(len(active)) * np.float32(fraction))
    n_grow = n_drop if grow_counts is None else grow_counts[i]
    if drop_counts is not None:
      n_drop = drop_counts[i]
    dropped = active[np.argsort(w[active], kind="stable")[:n_drop]]
    kept = mask > 0
    kept[dropped] = False
    candidates = np.flatnonzero(~kept)
    grown = candidates[np.argsort(-m[candidates], kind="stable")[:n_grow]]
    new = kept.copy()
    new[grown] = True
    results.append(new.astype("float32"))
  return results


def shared_layer_model():
  """One SparseWrapper used twice per step (on both halves of the input)."""
  keras.utils.set_random_seed(0)
  inputs = keras.Input((12,))
  shared = kr.SparseWrapper(keras.layers.Dense(8, activation="relu", name="shared"), 0.5)
  halves = [keras.layers.Lambda(lambda t, i=i: t[:, 6 * i:6 * (i + 1)])(inputs)
            for i in range(2)]
  joined = keras.layers.Concatenate()([shared(h) for h in halves])
  outputs = kr.SparseWrapper(keras.layers.Dense(3, name="logits"), 0.5)(joined)
  return keras.Model(inputs, outputs)


@pytest.mark.parametrize("make", [sparse_mlp, shared_layer_model], ids=["mlp", "shared"])
def test_momentum_is_the_ema_of_dense_gradients(toy_data, make):
  x, y = toy_data
  model = make()
  model.compile(keras.optimizers.SGD(0.1), sparse_ce())
  # A train function traced before SNFS does not feed the taps: it is re-made.
  model.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0)
  snfs = kr.SNFSScheduler(update_freq=1, momentum=0.5, begin_step=100, end_step=100)
  expected = None
  for i in range(3):
    xb, yb = x[32 * i:32 * (i + 1)], y[32 * i:32 * (i + 1)]
    grads = dense_gradients(model, xb, yb)
    expected = [0.5 * g for g in grads] if expected is None else \
        [0.5 * e + 0.5 * g for e, g in zip(expected, grads)]
    fit_one_batch(model, xb, yb, snfs)
  assert snfs.updates == 0
  for tap, want in zip(taps(model), expected):
    np.testing.assert_allclose(tap.buffer.numpy(), want, rtol=1e-5, atol=1e-7)
  # The dense gradient has entries where the mask is 0; the optimizer does not.
  for (w, m), tap in zip(masked_pairs(model), taps(model)):
    assert np.abs(tap.buffer.numpy()[m == 0]).sum() > 0
    assert np.all(w[m == 0] == 0)


def _preset_update(redistribution, scale):
  """One SNFS update at step 1 from momentum buffers set by hand."""
  rng = np.random.default_rng(3)
  model = sparse_mlp()
  model.compile(keras.optimizers.SGD(0.1, momentum=0.9), sparse_ce())
  x = rng.normal(size=(16, 12)).astype("float32")
  y = rng.integers(0, 3, 16).astype("int32")
  snfs = kr.SNFSScheduler(update_freq=1, prune_rate=0.5, prune_rate_schedule="constant",
                          redistribution=redistribution, begin_step=1, end_step=1)
  fit_one_batch(model, x, y, snfs)  # Step 0: taps made, no update.
  momenta = []
  for tap, s in zip(taps(model), scale):
    value = (s * rng.normal(size=tap.buffer.shape)).astype("float32")
    tap.buffer.assign(value)
    momenta.append(value)
  before = masked_pairs(model)
  fit_one_batch(model, x, y, snfs)  # The update at step 1, then a step.
  assert snfs.updates == 1
  return model, snfs, before, momenta


def test_growth_picks_largest_momentum_without_redistribution():
  model, snfs, before, momenta = _preset_update(False, [1.0, 1.0, 1.0])
  want = expected_masks([m for _, m in before], [w for w, _ in before], momenta, 0.5)
  for (_, got), expected, (_, old) in zip(masked_pairs(model), want, before):
    np.testing.assert_array_equal(got.ravel(), expected)
    assert got.sum() == old.sum()
  assert snfs.last_mask_change > 0
  assert snfs.count_history == [] and snfs.flops_history == []


def test_redistribution_keeps_the_total_and_moves_counts():
  # fc2's momentum is 100x the others': it takes most of the regrowth.
  model, snfs, before, momenta = _preset_update(True, [1.0, 100.0, 1.0])
  old_counts = [int(m.sum()) for _, m in before]
  new_counts = counts(model)
  assert sum(new_counts) == sum(old_counts)
  assert new_counts[1] > old_counts[1]
  assert new_counts[0] < old_counts[0] and new_counts[2] < old_counts[2]
  # The split is the one `bounded_regrowth` gives for mean |m| over active weights.
  n_drop = [int(np.float32(c) * np.float32(0.5)) for c in old_counts]
  stats = [np.abs(m)[old > 0].mean() for m, (_, old) in zip(momenta, before)]
  sizes = [old.size for _, old in before]
  drops = redistributed_drops(n_drop, stats, old_counts, sizes).numpy()
  # Counts move through the drop: fc2 drops fewer (at most 1/4 of its drop
  # fewer), the others drop more (at most 1/4 more); each regrows its drop.
  assert n_drop[1] - n_drop[1] // 4 <= drops[1] < n_drop[1]
  assert all(d <= x <= d + d // 4 for x, d in zip(drops[::2], n_drop[::2]))
  # The same count changes as the regrowth split of `bounded_regrowth`.
  caps = [size - (c - d) for size, c, d in zip(sizes, old_counts, n_drop)]
  grow = bounded_regrowth(n_drop, stats, caps).numpy()
  assert new_counts == [c - d + g for c, d, g in zip(old_counts, n_drop, grow)]
  assert new_counts == [c - x + d for c, x, d in zip(old_counts, drops, n_drop)]
  want = expected_masks([m for _, m in before], [w for w, _ in before], momenta, 0.5,
                        grow_counts=n_drop, drop_counts=drops)
  for (_, got), expected, (_, old), d in zip(masked_pairs(model), want, before, n_drop):
    np.testing.assert_array_equal(got.ravel(), expected)
    # No layer grows more new connections than without redistribution.
    assert np.sum((got > 0) & (old == 0)) <= d
  step, logged = snfs.count_history[-1]
  assert step == 1 and list(logged.values()) == new_counts
  assert snfs.flops_history[-1] == (1, pytest.approx(kr.count_flops(model).ratio))


def small_convnet():
  """A conv layer (FLOPs per weight: 16 positions) and a Dense (1 per weight)."""
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((6, 6, 1)),
                            keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
                            keras.layers.Flatten(),
                            keras.layers.Dense(3, name="logits")])
  return kr.sparsify(model, 0.8, "uniform")


def test_fit_counts_and_logs(toy_data, tmp_path):
  x, y = toy_data
  images = np.resize(x, (len(x), 6, 6, 1))
  data = tf.data.Dataset.from_tensor_slices((images, y)).batch(32, drop_remainder=True)
  model = small_convnet()
  model.compile(keras.optimizers.SGD(0.1, momentum=0.9), sparse_ce())
  initial = counts(model)
  snfs = kr.SNFSScheduler(update_freq=2, prune_rate=0.5, end_step=12)
  history = model.fit(data, epochs=2, verbose=0, callbacks=[snfs])
  # Steps 2, 4, ..., 12: the one due at step 0 has no momentum to rank by.
  assert [step for step, _ in snfs.count_history] == [2, 4, 6, 8, 10, 12]
  totals = [sum(c.values()) for _, c in snfs.count_history]
  assert totals == [sum(initial)] * 6
  assert counts(model) != initial  # Layer counts moved, the total did not.
  assert history.history["active_weights"] == [sum(initial)] * 2
  assert history.history["flops_ratio"][-1] == pytest.approx(kr.count_flops(model).ratio)
  # Conv and Dense weights cost different FLOPs: moving counts moves FLOPs.
  assert len({round(r, 6) for _, r in snfs.flops_history}) > 1
  # The taps are not weights: the model saves and loads as before.
  path = str(tmp_path / "snfs.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  x = images[:32]
  np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                             rtol=1e-5, atol=1e-6)


def test_without_redistribution_layer_counts_stay(toy_dataset):
  model = sparse_mlp(0.8, "erk")
  model.compile(keras.optimizers.SGD(0.1, momentum=0.9), sparse_ce())
  initial = counts(model)
  snfs = kr.SNFSScheduler(update_freq=2, redistribution=False, end_step=12)
  model.fit(toy_dataset, epochs=1, verbose=0, callbacks=[snfs])
  assert snfs.updates == 3 and snfs.last_mask_change > 0
  assert counts(model) == initial


@pytest.mark.parametrize("kind", ["gradient", "momentum"])
def test_rigl_redistribution_keeps_total_and_moves_counts(toy_dataset, kind):
  model = sparse_mlp(0.8, "uniform")
  model.compile(keras.optimizers.SGD(0.1, momentum=0.9), sparse_ce())
  initial = counts(model)
  rigl = kr.RigLScheduler(toy_dataset, update_freq=2, drop_fraction=0.5, end_step=12,
                          redistribution=kind)
  history = model.fit(toy_dataset, epochs=2, verbose=0, callbacks=[rigl])
  assert rigl.updates == 7
  assert [sum(c.values()) for _, c in rigl.count_history] == [sum(initial)] * 7
  assert counts(model) != initial
  assert history.history["flops_ratio"][-1] == pytest.approx(rigl.flops_history[-1][1])
  assert (wrappers(model)[0].gradient_taps is not None) == (kind == "momentum")
  # At step 0 no momentum has been fed: counts stay; the batch gradient moves them.
  assert (list(rigl.count_history[0][1].values()) == initial) == (kind == "momentum")


@pytest.mark.parametrize("make", [
    lambda data: kr.SNFSScheduler(update_freq=2, prune_rate=0.5, end_step=6),
    lambda data: kr.RigLScheduler(data, update_freq=2, drop_fraction=0.5, end_step=6,
                                  redistribution="momentum"),
], ids=["snfs", "rigl_momentum"])
def test_mirrored_replicas_hold_identical_masks(toy_data, mirrored_strategy, make):
  x, y = toy_data
  data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32, drop_remainder=True)
  with mirrored_strategy.scope():
    model = sparse_mlp(0.8, "erk")
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), sparse_ce())
  initial = counts(model)
  scheduler = make(data)
  model.fit(data, epochs=1, verbose=0, callbacks=[scheduler])
  assert scheduler.updates >= 3
  assert sum(counts(model)) == sum(initial) and counts(model) != initial

  def replica_values(variable):
    inner = getattr(variable, "value", variable) if _keras.IS_KERAS3 else variable
    return [np.asarray(v) for v in inner.values]

  for layer in wrappers(model):
    for w, m in layer.masked_weights:
      for variable in [w, m] + _keras.optimizer_slots(model.optimizer, w):
        first, second = replica_values(variable)
        np.testing.assert_array_equal(first, second)


def test_train_py_snfs(tmp_path):
  args = ["--method=snfs", "--prune_rate=0.4", "--snfs_momentum=0.8"]
  from absl import flags  # pylint: disable=g-import-not-at-top
  from examples import train  # pylint: disable=g-import-not-at-top
  values = flags.FLAGS
  values.unparse_flags()
  try:
    values(["train.py", "--verbose=0", "--train_steps=4", "--steps_per_epoch=2",
            "--eval_steps=2", "--update_freq=2", "--batch_size=32",
            f"--model_dir={tmp_path}", *args])
    config, options = train.setup_from_flags(values)
    report = train.run(config, options)
  finally:
    values.unparse_flags()
  assert report["steps"] == 4
  assert [u["step"] for u in report["mask_updates"]] == [2]  # Step 0: no momentum yet.
  assert report["sparsity"]["total"] == pytest.approx(0.9, abs=1e-3)
  sparse_rows = [r for r in report["sparsity"]["layers"] if r["sparsity"] > 0]
  assert report["history"][-1]["active_weights"] == sum(r["nnz"] for r in sparse_rows)
  assert report["history"][-1]["flops_ratio"] == pytest.approx(
      report["flops"]["inference_ratio"], rel=1e-4)
  assert report["setup"]["prune_rate"] == 0.4 and report["setup"]["snfs_momentum"] == 0.8
  # 2 f_S + f_D per step up to end_step (3 of 4 steps), then 3 f_S.
  ratio = report["flops"]["inference_ratio"]
  want = (3 * (2 * ratio + 1) + 3 * ratio) / (4 * 3)
  assert report["flops"]["training_ratio"] == pytest.approx(want, rel=1e-3)


@pytest.mark.parametrize("method,flag,kind", [
    ("rigl", None, None), ("rigl", "gradient", "gradient"), ("rigl", "momentum", "momentum"),
    ("snfs", None, "momentum"), ("snfs", "none", None)])
def test_recipes_pass_redistribution(toy_dataset, method, flag, kind):
  from keras_rigl.recipes import builders, configs, plan as plan_lib  # pylint: disable=g-import-not-at-top
  config = configs.get_config("fashion_mnist_lenet300_100").replace(
      method=method, redistribution=flag, prune_rate=0.3, snfs_momentum=0.7)
  scheduler = builders.make_scheduler(
      config, plan_lib.make_plan(config, kr.data.dataset_info("fashion_mnist")), toy_dataset)
  assert scheduler.redistribution == kind
  if method == "snfs":
    assert isinstance(scheduler, kr.SNFSScheduler)
    assert (scheduler.prune_rate, scheduler.momentum) == (0.3, 0.7)


@pytest.mark.parametrize("module_name", ["methods.snfs", "methods.gradient_tap", "redistribution", "wrapper"])
def test_docstring_examples_run(module_name):
  import doctest  # pylint: disable=g-import-not-at-top
  import importlib  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f"keras_rigl.{module_name}")
  result = doctest.testmod(module, verbose=False)
  assert result.attempted > 0 and result.failed == 0
