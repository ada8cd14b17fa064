"""Neuron ablation: measured (sparsity_report, training report) and prevented (min_fan_in)."""

import numpy as np
import pytest
import tensorflow as tf

import keras_rigl as kr
from keras_rigl import connectivity
from keras_rigl import masks
from keras_rigl._keras import keras
from keras_rigl.recipes import report as report_lib

# Active inputs of the 4 output units of an 8x4 kernel: 3, 0 (dead), 8, 1.
_FAN_IN = [3, 0, 8, 1]


def _hand_mask():
  mask = np.zeros((8, 4), "float32")
  for unit, count in enumerate(_FAN_IN):
    mask[:count, unit] = 1.0
  return mask


def _mlp(units=4, inputs=8):
  return keras.Sequential([keras.Input((inputs,)),
                           keras.layers.Dense(units, activation="relu", name="fc"),
                           keras.layers.Dense(2, name="out")])


# --- measured -----------------------------------------------------------------


def test_report_counts_dead_units_of_a_hand_made_mask():
  model = kr.sparsify(_mlp(), 0.5, "uniform")
  wrapper = model.get_layer("sparse_fc")
  wrapper.masked_weights[0][1].assign(_hand_mask())
  report = kr.sparsity_report(model)
  fc = report[0]
  assert (fc.units, fc.dead_units, fc.max_fan_in, fc.nnz) == (4, 1, 8, 12)
  assert report.units == 4 + 2 and report.dead_units == 1 + report[1].dead_units
  lines = str(report).splitlines()
  assert lines[0].split()[-5:] == ["units", "dead", "units", "max", "fan-in"]
  assert lines[2].split()[-3:] == ["4", "1", "8"]
  assert lines[-1].split()[-2:] == ["6", str(report.dead_units)]


def test_report_counts_dead_units_of_compressed_positions():
  layer = kr.layers.SparseDense(4, sparsity=0.625, name="fc")
  model = keras.Sequential([keras.Input((8,)), layer])
  weight = layer.compressed_weights[0]
  positions = np.flatnonzero(_hand_mask().ravel())  # Row-major i * 4 + j.
  weight.assign(positions, np.ones(len(positions), "float32"))
  row = kr.sparsity_report(model)[0]
  assert (row.units, row.dead_units, row.max_fan_in, row.nnz) == (4, 1, 8, 12)
  assert connectivity.fan_in_of_positions(positions, 4).tolist() == _FAN_IN


def test_training_report_shows_dead_units(tmp_path):
  model = kr.sparsify(_mlp(), 0.5, "uniform")
  model.get_layer("sparse_fc").masked_weights[0][1].assign(_hand_mask())
  report = report_lib.build_report(model, _mlp(), method="static", steps=1, batch_size=1)
  fc = report["sparsity"]["layers"][0]
  assert (fc["units"], fc["dead_units"], fc["max_fan_in"]) == (4, 1, 8)
  assert report["sparsity"]["dead_units"] == 1 + report["sparsity"]["layers"][1]["dead_units"]
  assert "dead units" in report_lib.format_report(report)
  # Reports written before these columns existed still print.
  for row in report["sparsity"]["layers"]:
    del row["units"], row["dead_units"], row["max_fan_in"]
  assert "fc" in report_lib.sparsity_table(report)
  report_lib.save_figure(report, str(tmp_path / "r.png"))


# --- prevented: the update rule -------------------------------------------------


def _random_case(rng, rows, cols, density):
  mask = (rng.uniform(size=(rows, cols)) < density).astype("float32")
  weights = (rng.normal(size=(rows, cols)) * mask).astype("float32")
  scores = np.abs(rng.normal(size=(rows, cols))).astype("float32")
  return mask, weights, scores


def _reference(mask, weights, scores, fraction, min_fan_in):
  """The rule of masks.min_fan_in_update, written out with loops and sorts."""
  rows, cols = mask.shape
  active = mask.ravel() > 0
  floor = min(min_fan_in, rows, int(active.sum()) // cols)
  drop = np.abs(weights.ravel() * active)
  grow = scores.ravel()
  protected = np.zeros(active.size, bool)
  for j in range(cols):
    inputs = sorted((r for r in range(rows) if active[r * cols + j]),
                    key=lambda r: (-drop[r * cols + j], r))
    protected[[r * cols + j for r in inputs[:floor]]] = True
  droppable = active & ~protected
  n_drop = min(int(masks.drop_count(int(active.sum()), fraction)), int(droppable.sum()))
  kept = active.copy()
  kept[sorted(np.flatnonzero(droppable), key=lambda i: (drop[i], -i))[:n_drop]] = False
  level_of = kept.reshape(rows, cols).sum(0)
  fills, budget = np.zeros(cols, int), n_drop
  for level in range(floor):  # Water-filling: every unit at a level, then the next.
    for j in range(cols):
      if level_of[j] == level and budget:
        level_of[j] += 1
        fills[j] += 1
        budget -= 1
  new = kept.copy()
  for j in range(cols):
    free = sorted((r for r in range(rows) if not kept[r * cols + j]),
                  key=lambda r: (-grow[r * cols + j], r))
    new[[r * cols + j for r in free[:fills[j]]]] = True
  rest = sorted(np.flatnonzero(~new), key=lambda i: (-grow[i], i))[:n_drop - fills.sum()]
  new[rest] = True
  return new.reshape(rows, cols)


def test_update_matches_a_loop_reference(rng):
  for trial in range(60):
    rows, cols = rng.integers(1, 10, size=2)
    mask, weights, scores = _random_case(rng, rows, cols, rng.uniform(0.05, 0.9))
    if trial % 2:  # Ties in both scores.
      weights, scores = np.round(weights * 2) / 2, np.round(scores)
    fraction, min_fan_in = float(rng.uniform()), int(rng.integers(1, 6))
    new_mask = masks.update_mask(mask, weights, scores, fraction, min_fan_in=min_fan_in)[0]
    assert np.array_equal(new_mask.numpy() > 0,
                          _reference(mask, weights, scores, fraction, min_fan_in)), trial


def test_min_fan_in_zero_is_the_plain_update_bit_for_bit(rng):
  for _ in range(5):
    mask, weights, scores = _random_case(rng, 20, 7, 0.3)
    plain = masks.update_mask(mask, weights, scores, 0.3)
    for result in (masks.update_mask(mask, weights, scores, 0.3, min_fan_in=0),
                   masks.min_fan_in_update(mask, weights, scores, 0.3, 0)):
      assert np.array_equal(plain[0].numpy(), result[0].numpy())
      assert np.array_equal(plain[1].numpy(), result[1].numpy())


@pytest.mark.parametrize("min_fan_in", [1, 2, 5])
def test_dead_units_are_refilled_and_counts_stay_exact(rng, min_fan_in):
  mask, weights, scores = _random_case(rng, 30, 10, 0.4)
  mask[:, [2, 7]] = 0.0  # Two dead units.
  mask[:, 4] = 0.0
  mask[3, 4] = 1.0       # One unit with a single input.
  weights *= mask
  new_mask, grown = masks.update_mask(mask, weights, scores, 0.5, min_fan_in=min_fan_in)
  new_mask = new_mask.numpy()
  assert new_mask.sum() == mask.sum()
  assert connectivity.fan_in_of_mask(new_mask).min() >= min_fan_in
  assert np.array_equal(grown.numpy(), (new_mask > 0) & (mask == 0))
  # A dead unit takes its best-scoring inputs.
  best = np.argsort(-scores[:, 2], kind="stable")[:min_fan_in]
  assert new_mask[best, 2].all()


def test_the_drop_spares_each_units_strongest_inputs():
  # Unit 1's only input is the weakest weight; unit 2 has none.
  mask = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0]], "float32")
  weights = np.array([[0.5, 0.1, 0], [0.9, 0, 0], [0.7, 0, 0]], "float32")
  scores = np.zeros((3, 3), "float32")
  scores[0, 2] = 1.0
  plain = masks.update_mask(mask, weights, scores, 0.25)[0].numpy()
  assert connectivity.fan_in_of_mask(plain).tolist() == [3, 0, 1]  # Unit 1 cut off.
  kept = masks.update_mask(mask, weights, scores, 0.25, min_fan_in=1)[0].numpy()
  # 0.5, the weakest unprotected weight, went; unit 2 took its best input.
  assert kept.tolist() == [[0, 1, 1], [1, 0, 0], [1, 0, 0]]


def test_budget_smaller_than_deficit_fills_neediest_units_first():
  # 6 inputs x 5 units, fan-ins 0, 1, 0, 3, 6; |W| grows with the flat index.
  # drop_fraction 0.2 of 10 active = 2 moves: the weakest unprotected weights
  # of units 3 and 4 go (fan-ins 0, 1, 0, 2, 5 after the drop).
  mask = np.zeros((6, 5), "float32")
  mask[0, 1] = 1
  mask[:3, 3] = 1
  mask[:, 4] = 1
  weights = mask * np.arange(1, 31, dtype="float32").reshape(6, 5)
  scores = np.ones((6, 5), "float32")
  new_mask = masks.update_mask(mask, weights, scores, 0.2, min_fan_in=2)[0].numpy()
  fan_in = connectivity.fan_in_of_mask(new_mask)
  # Deficit 2 + 1 + 2 = 5 > budget 2: the two units at fan-in 0 get one each
  # (level 0 before level 1), not unit 0 two.
  assert fan_in.tolist() == [1, 1, 1, 2, 5]
  assert new_mask.sum() == mask.sum()
  # With budget 1, level 0 goes to the lower unit index.
  one = masks.update_mask(mask, weights, scores, 0.1, min_fan_in=2)[0].numpy()
  assert connectivity.fan_in_of_mask(one).tolist() == [1, 1, 0, 2, 6]


def test_min_fan_in_above_the_rows_is_clamped(rng):
  mask, weights, scores = _random_case(rng, 3, 12, 0.3)
  clamped = masks.update_mask(mask, weights, scores, 0.6, min_fan_in=100)[0].numpy()
  assert np.array_equal(clamped,
                        masks.update_mask(mask, weights, scores, 0.6, min_fan_in=3)[0])
  assert clamped.sum() == mask.sum()


def test_a_minimum_above_what_the_layer_can_hold_still_repairs(rng):
  # 8 ones over 5 units cannot give every unit 4: the minimum becomes 8 // 5 = 1
  # (else every connection would be protected and the layer frozen).
  mask = np.zeros((10, 5), "float32")
  mask[:3, 0] = mask[:3, 1] = mask[:2, 2] = 1
  weights = mask * rng.normal(size=mask.shape).astype("float32")
  new_mask = masks.update_mask(mask, weights, np.ones_like(mask), 0.5, min_fan_in=4)[0]
  fan_in = connectivity.fan_in_of_mask(new_mask.numpy())
  assert fan_in.sum() == 8 and fan_in.min() == 1


def test_eager_and_tf_function_agree(rng):
  for trial in range(6):
    mask, weights, scores = _random_case(rng, 9, 11, 0.15)
    if trial % 2:
      weights, scores = np.round(weights), np.round(scores)  # Ties.
    fraction = tf.constant(0.3 + 0.1 * trial, tf.float64)
    update = lambda m, w, g, f: masks.update_mask(m, w, g, f, min_fan_in=2)
    eager = update(mask, weights, scores, fraction)
    traced = tf.function(update, autograph=False)(
        tf.constant(mask), tf.constant(weights), tf.constant(scores), fraction)
    for a, b in zip(eager, traced):
      assert np.array_equal(a.numpy(), b.numpy())


def test_conv_kernels_count_output_channels():
  mask = np.ones((3, 3, 2, 4), "float32")
  mask[..., 1] = 0.0
  assert connectivity.fan_in_of_mask(mask).tolist() == [18, 0, 18, 18]
  new_mask = masks.update_mask(mask, mask, np.ones_like(mask), 0.1, min_fan_in=3)[0]
  assert connectivity.fan_in_of_mask(new_mask.numpy())[1] >= 3


def test_static_shapes_refuse_min_fan_in():
  mask = np.ones((4, 2), "float32")
  with pytest.raises(ValueError, match="min_fan_in=1 works with dynamic shapes only"):
    masks.update_mask(mask, mask, mask, 0.5, max_update=4, min_fan_in=1)


# --- prevented: the schedulers ------------------------------------------------


def _toy(n=64):
  x = np.random.default_rng(0).normal(size=(n, 8)).astype("float32")
  y = (x[:, 0] > 0).astype("int32")
  return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


@pytest.mark.parametrize("kind", ["rigl", "set"])
def test_fit_with_min_fan_in_keeps_every_unit_connected(kind):
  keras.utils.set_random_seed(0)
  model = kr.sparsify(_mlp(units=16), 0.75, "uniform")
  mask = model.get_layer("sparse_fc").masked_weights[0][1]
  cut = mask.numpy()
  cut[:, :3] = 0.0  # Three dead units, their ones moved to unit 3.
  cut[:, 3] = 1.0
  mask.assign(cut)
  ones = int(cut.sum())
  model.compile(keras.optimizers.SGD(0.1),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  data = _toy()
  scheduler = (kr.RigLScheduler(data, update_freq=2, drop_fraction=0.5, end_step=8,
                                min_fan_in=1) if kind == "rigl" else
               kr.SETScheduler(update_freq=2, drop_fraction=0.5, end_step=8, min_fan_in=1))
  model.fit(data, epochs=2, callbacks=[scheduler], verbose=0)
  assert scheduler.updates == 4 and scheduler.min_fan_in == 1
  fc = kr.sparsity_report(model)[0]
  assert fc.dead_units == 0 and fc.nnz == ones


@pytest.mark.parametrize("kind", ["rigl", "set"])
def test_compressed_fit_with_min_fan_in_keeps_every_unit_connected(kind):
  """The same repair on compressed layers (tests/test_compressed_fan_in.py: same
  connections as the masked storage)."""
  keras.utils.set_random_seed(0)
  model = kr.sparsify(_mlp(units=16), 0.75, "uniform", storage="compressed")
  weight = model.get_layer("fc").compressed_weights[0]
  # Three dead units (columns 0-2): every entry in columns 3..15.
  free = [p for p in range(weight.size) if p % weight.n_cols >= 3]
  weight.assign(np.array(free[:weight.nnz]), weight.current_values())
  assert kr.sparsity_report(model)[0].dead_units == 3
  model.compile(keras.optimizers.SGD(0.1),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  data = _toy()
  scheduler = (kr.RigLScheduler(data, update_freq=2, drop_fraction=0.5, end_step=8,
                                min_fan_in=1) if kind == "rigl" else
               kr.SETScheduler(update_freq=2, drop_fraction=0.5, end_step=8, min_fan_in=1))
  model.fit(data, epochs=2, callbacks=[scheduler], verbose=0)
  assert scheduler.updates == 4
  fc = kr.sparsity_report(model)[0]
  assert fc.dead_units == 0 and fc.nnz == weight.nnz


# --- train.py: --method=snip, --min_fan_in --------------------------------------


def _quick(config, tmp_path):
  options = kr.recipes.RunOptions(steps_per_epoch=3, eval_steps=1, verbose=0,
                                  model_dir=str(tmp_path), print_report=False)
  return kr.recipes.run(config.replace(train_steps=3, epochs=None, batch_size=32), options)


def test_train_snip_runs_with_the_requested_sparsity(tmp_path):
  config = kr.recipes.get_config("fashion_mnist_lenet300_100").replace(
      method="snip", sparsity=0.95, distribution="uniform", snip_batches=2)
  report = _quick(config, tmp_path)
  assert report["method"] == "snip" and report["steps"] == 3
  for layer in report["sparsity"]["layers"]:
    assert layer["sparsity"] == pytest.approx(0.95, abs=1e-3)
  assert not report["mask_updates"]


def test_train_flags_reach_the_config():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from examples import train  # pylint: disable=g-import-not-at-top
  values = flags.FLAGS
  values.unparse_flags()
  try:
    values(["train.py", "--method=snip", "--snip_batches=3", "--snip_distribution=global"])
    config, _ = train.setup_from_flags(values)
    assert (config.method, config.snip_batches, config.snip_distribution) == (
        "snip", 3, "global")
    values.unparse_flags()
    values(["train.py", "--method=set", "--min_fan_in=2"])
    config, _ = train.setup_from_flags(values)
    plan = kr.recipes.make_plan(config, kr.data.dataset_info(config.dataset))
    assert kr.recipes.make_scheduler(config, plan).min_fan_in == 2
  finally:
    values.unparse_flags()


def test_min_fan_in_under_mirrored_strategy_gives_identical_replicas(mirrored_strategy):
  with mirrored_strategy.scope():
    keras.utils.set_random_seed(0)
    model = kr.sparsify(_mlp(units=16), 0.75, "uniform")  # 32 ones, 16 units.
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  data = _toy()
  model.fit(data, epochs=1, verbose=0, callbacks=[
      kr.RigLScheduler(data, update_freq=2, drop_fraction=0.5, end_step=4, min_fan_in=1)])
  _, mask = model.get_layer("sparse_fc").masked_weights[0]
  inner = getattr(mask, "value", mask) if kr.keras.__name__ == "keras" else mask
  replicas = [np.asarray(v) for v in inner.values]
  assert len(replicas) == 2 and np.array_equal(replicas[0], replicas[1])
  assert connectivity.fan_in_of_mask(replicas[0]).min() >= 1
