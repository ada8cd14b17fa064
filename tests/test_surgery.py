"""Tests for keras_rigl.surgery (sparsify, strip, sparsity_report) and export."""

import math

import numpy as np
import pytest
import tensorflow as tf

from conftest import make_mlp, masked_pairs, sparse_ce
import keras_rigl as kr
from keras_rigl import SparseWrapper, layer_sparsities
from keras_rigl._keras import keras
from keras_rigl.surgery import walk_layers

L = keras.layers


def _wrappers(model):
  return {l.layer.name: l for l in walk_layers(model) if isinstance(l, SparseWrapper)}


def _by_name(model):
  return {l.name: l for l in walk_layers(model)}


def _functional(seed=0):
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((8, 8, 3))
  x = L.Conv2D(8, 3, padding="same", name="conv1")(inputs)
  x = L.BatchNormalization(name="bn")(x)
  x = L.ReLU(name="relu")(x)
  x = L.SeparableConv2D(16, 3, depth_multiplier=2, name="sep")(x)
  x = L.GlobalAveragePooling2D(name="pool")(x)
  a = L.Dense(12, name="branch_a")(x)
  b = L.Dense(12, name="branch_b")(x)
  x = L.Add(name="add")([a, b])
  outputs = L.Dense(5, name="fc")(x)
  return keras.Model(inputs, outputs, name="functional")


FUNCTIONAL_SHAPES = {
    "conv1": (3, 3, 3, 8),
    "sep/depthwise_kernel": (3, 3, 8, 2),
    "sep/pointwise_kernel": (1, 1, 16, 16),
    "branch_a": (16, 12),
    "branch_b": (16, 12),
    "fc": (12, 5),
}
MLP_SHAPES = {"fc1": (12, 24), "fc2": (24, 24), "logits": (24, 3)}


def _nested(seed=0):
  keras.utils.set_random_seed(seed)
  block = keras.Sequential([
      keras.Input((10,)),
      L.Dense(20, activation="relu", name="inner1"),
      L.Dense(16, activation="relu", name="inner2"),
  ], name="block")
  inputs = keras.Input((10,))
  x = block(inputs)
  x = L.Dense(30, activation="relu", name="mid")(x)
  outputs = L.Dense(4, name="head")(x)
  return keras.Model(inputs, outputs, name="outer")


NESTED_SHAPES = {"inner1": (10, 20), "inner2": (20, 16), "mid": (16, 30), "head": (30, 4)}


def _check_counts(original, sparse, shapes, expected_sparsities):
  """Zero counts per weight are floor(s N); kept weights equal the originals."""
  wrappers = _wrappers(sparse)
  plain = _by_name(sparse)
  old = _by_name(original)
  for full, shape in shapes.items():
    layer_name, _, key = full.partition("/")
    s = expected_sparsities[full]
    size = int(np.prod(shape))
    if s == 0.0:
      # Left unwrapped (custom 0 or made dense by ER/ERK), weights untouched.
      assert layer_name not in wrappers, full
      for a, b in zip(plain[layer_name].get_weights(), old[layer_name].get_weights()):
        np.testing.assert_array_equal(a, b)
      continue
    wrapper = wrappers[layer_name]
    keys = wrapper.weight_keys
    index = keys.index(key) if key else 0
    weight, mask = wrapper.masked_weights[index]
    weight, mask = np.asarray(weight), np.asarray(mask)
    assert weight.shape == shape
    assert int(np.sum(mask == 0)) == math.floor(s * size), full
    assert np.all(weight[mask == 0] == 0)
    original = {v.name.split("/")[-1].split(":")[0]: np.asarray(v)
                for v in old[layer_name].weights}
    wkey = key or keys[0]
    np.testing.assert_array_equal(weight[mask == 1], original[wkey][mask == 1])
    # Biases are copied as they were.
    if "bias" in original:
      bias = [np.asarray(v) for v in wrapper.layer.weights
              if v.name.split("/")[-1].split(":")[0] == "bias"][0]
      np.testing.assert_array_equal(bias, original["bias"])


def _masked_output(sparse, x):
  return np.asarray(sparse(x, training=False))


# ------------------------------------------------------------------ sparsify


@pytest.mark.parametrize("distribution", ["uniform", "er", "erk"])
def test_sparsify_sequential(mlp, distribution):
  sparse = kr.sparsify(mlp, 0.8, distribution=distribution)
  assert isinstance(sparse, keras.Sequential)
  assert sparse is not mlp
  expected = layer_sparsities(MLP_SHAPES, 0.8, distribution)
  _check_counts(mlp, sparse, MLP_SHAPES, expected)
  # The original model is untouched (no wrappers, no zeros introduced).
  assert not _wrappers(mlp)
  assert all(np.count_nonzero(np.asarray(l.kernel)) == np.prod(l.kernel.shape)
             for l in mlp.layers)


def test_sparsify_functional_with_batchnorm_and_separable():
  model = _functional()
  sparse = kr.sparsify(model, 0.7, distribution="erk", seed=3)
  assert not isinstance(sparse, keras.Sequential)
  expected = layer_sparsities(FUNCTIONAL_SHAPES, 0.7, "erk")
  _check_counts(model, sparse, FUNCTIONAL_SHAPES, expected)
  layers = _by_name(sparse)
  assert isinstance(layers["bn"], L.BatchNormalization)  # Never wrapped.
  for a, b in zip(layers["bn"].get_weights(), _by_name(model)["bn"].get_weights()):
    np.testing.assert_array_equal(a, b)
  # SeparableConv2D: both kernels masked, each with its own sparsity.
  sep = _wrappers(sparse)["sep"]
  assert sep.weight_keys == ["depthwise_kernel", "pointwise_kernel"]
  # Outputs equal the original model with W * M (the strip test covers the
  # general case): a dense copy with the masked kernels.
  x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
  np.testing.assert_allclose(_masked_output(sparse, x),
                             np.asarray(kr.strip(sparse)(x, training=False)),
                             rtol=1e-5, atol=1e-5)


def test_sparsify_nested_model():
  model = _nested()
  sparse = kr.sparsify(model, 0.9, distribution="erk")
  expected = layer_sparsities(NESTED_SHAPES, 0.9, "erk")
  _check_counts(model, sparse, NESTED_SHAPES, expected)
  # The nested block is still a nested model, with its layers wrapped inside.
  block = [l for l in sparse.layers if isinstance(l, keras.Model)]
  assert len(block) == 1 and block[0].name == "block"
  assert {l.layer.name for l in block[0].layers if isinstance(l, SparseWrapper)} == {
      name for name in ("inner1", "inner2") if expected[name] > 0}
  x = np.ones((3, 10), "float32")
  assert sparse(x).shape == (3, 4)


def test_sparsify_erk_layer_forced_dense_is_left_unwrapped():
  # At 0.9 ERK the 30x3 output layer would need density > 1 (raw 33/90 times
  # factor 789/283 = 1.02): it becomes dense, so sparsify leaves it unwrapped.
  keras.utils.set_random_seed(0)
  model = keras.Sequential([
      keras.Input((100,)), L.Dense(60, name="fc1"), L.Dense(30, name="fc2"),
      L.Dense(3, name="out")])
  shapes = {"fc1": (100, 60), "fc2": (60, 30), "out": (30, 3)}
  expected = layer_sparsities(shapes, 0.9, "erk")
  assert expected["out"] == 0.0
  sparse = kr.sparsify(model, 0.9, "erk")
  assert set(_wrappers(sparse)) == {"fc1", "fc2"}
  _check_counts(model, sparse, shapes, expected)
  # The total non-zero count is the uniform budget, within rounding.
  report = kr.sparsity_report(sparse)
  budget = sum(n - math.floor(0.9 * n) for n in (6000, 1800, 90))
  assert abs(report.nnz - budget) <= 2


def test_sparsify_seed():
  a = masked_pairs(kr.sparsify(make_mlp(), 0.8, "uniform", seed=1))
  b = masked_pairs(kr.sparsify(make_mlp(), 0.8, "uniform", seed=1))
  c = masked_pairs(kr.sparsify(make_mlp(), 0.8, "uniform", seed=2))
  for (_, m1), (_, m2) in zip(a, b):
    np.testing.assert_array_equal(m1, m2)
  assert any(not np.array_equal(m1, m3) for (_, m1), (_, m3) in zip(a, c))


def test_sparsify_mask_init_dense(mlp):
  sparse = kr.sparsify(mlp, 0.8, "uniform", mask_init="dense")
  wrappers = _wrappers(sparse)
  assert set(wrappers) == {"fc1", "fc2", "logits"}
  for wrapper in wrappers.values():
    assert wrapper.target_sparsity == pytest.approx(0.8)
    assert wrapper.sparsity == 0.0
  for a, b in zip(sparse.get_weights(), mlp.get_weights()):
    if a.shape == b.shape and a.ndim == 2 and not np.all((a == 0) | (a == 1)):
      np.testing.assert_array_equal(a, b)


def test_sparsify_exclude_by_names(mlp):
  sparse = kr.sparsify(mlp, 0.8, "erk", exclude=["fc1"])
  assert "fc1" not in _wrappers(sparse)
  rest = {k: v for k, v in MLP_SHAPES.items() if k != "fc1"}
  expected = layer_sparsities(rest, 0.8, "erk")  # fc1 is out of the scaling.
  _check_counts(mlp, sparse, rest, expected)
  np.testing.assert_array_equal(np.asarray(_by_name(sparse)["fc1"].kernel),
                                np.asarray(mlp.layers[0].kernel))
  # A single name as a string works too.
  sparse = kr.sparsify(mlp, 0.8, "uniform", exclude="logits")
  assert set(_wrappers(sparse)) == {"fc1", "fc2"}


def test_sparsify_exclude_by_predicate():
  model = _functional()
  sparse = kr.sparsify(model, 0.8, "uniform",
                       exclude=lambda layer: isinstance(layer, L.Conv2D) or
                       layer.name == "fc")
  wrapped = set(_wrappers(sparse))
  assert "conv1" not in wrapped and "fc" not in wrapped
  # SeparableConv2D is not a Conv2D subclass: it stays in.
  assert wrapped == {"sep", "branch_a", "branch_b"}
  for name in ("branch_a", "branch_b"):
    (_, mask), = _wrappers(sparse)[name].masked_weights
    assert int(np.sum(np.asarray(mask) == 0)) == math.floor(0.8 * 16 * 12)


def test_sparsify_unknown_exclude_name(mlp):
  with pytest.raises(ValueError, match=r"exclude names \['nope'\]"):
    kr.sparsify(mlp, 0.8, exclude=["fc1", "nope"])


def test_sparsify_custom_sparsity(mlp):
  custom = {"fc1": 0.3}
  sparse = kr.sparsify(mlp, 0.8, "erk", custom_sparsity=custom)
  expected = layer_sparsities(MLP_SHAPES, 0.8, "erk", custom_sparsity=custom)
  assert expected["fc1"] == 0.3
  _check_counts(mlp, sparse, MLP_SHAPES, expected)
  # custom 0.0 keeps a layer dense and unwrapped.
  sparse = kr.sparsify(mlp, 0.8, "uniform", custom_sparsity={"logits": 0.0})
  assert set(_wrappers(sparse)) == {"fc1", "fc2"}


def test_sparsify_custom_sparsity_multi_kernel_by_layer_name():
  model = _functional()
  sparse = kr.sparsify(model, 0.8, "erk", custom_sparsity={"sep": 0.5})
  expected = layer_sparsities(
      FUNCTIONAL_SHAPES, 0.8, "erk",
      custom_sparsity={"sep/depthwise_kernel": 0.5, "sep/pointwise_kernel": 0.5})
  assert expected["sep/depthwise_kernel"] == expected["sep/pointwise_kernel"] == 0.5
  _check_counts(model, sparse, FUNCTIONAL_SHAPES, expected)
  # One kernel only.
  sparse = kr.sparsify(model, 0.8, "uniform",
                       custom_sparsity={"sep/pointwise_kernel": 0.25})
  (_, dw_mask), (_, pw_mask) = _wrappers(sparse)["sep"].masked_weights
  assert int(np.sum(np.asarray(dw_mask) == 0)) == math.floor(0.8 * 144)
  assert int(np.sum(np.asarray(pw_mask) == 0)) == math.floor(0.25 * 256)


def test_sparsify_custom_sparsity_errors(mlp):
  with pytest.raises(ValueError, match=r"custom_sparsity names \['fc9'\]"):
    kr.sparsify(mlp, 0.8, custom_sparsity={"fc9": 0.5})
  with pytest.raises(ValueError, match=r"custom_sparsity names \['fc1'\].*excluded"):
    kr.sparsify(mlp, 0.8, custom_sparsity={"fc1": 0.5}, exclude=["fc1"])
  with pytest.raises(ValueError, match=r"custom_sparsity names \['bn'\]"):
    kr.sparsify(_functional(), 0.8, custom_sparsity={"bn": 0.5})


def test_sparsify_bad_arguments(mlp):
  with pytest.raises(ValueError, match=r"sparsity must be"):
    kr.sparsify(mlp, 1.0)
  with pytest.raises(ValueError, match=r"Unknown distribution"):
    kr.sparsify(mlp, 0.5, distribution="random")


class _Subclassed(keras.Model):

  def __init__(self):
    super().__init__()
    self.fc = L.Dense(3)

  def call(self, x):
    return self.fc(x)


def test_sparsify_subclassed_model_is_a_type_error():
  model = _Subclassed()
  model(np.ones((1, 4), "float32"))
  with pytest.raises(TypeError, match="SparseWrapper"):
    kr.sparsify(model, 0.5)
  with pytest.raises(TypeError, match="subclassed"):
    kr.strip(model)


def test_sparsify_not_a_model():
  with pytest.raises(TypeError, match="keras Model"):
    kr.sparsify(L.Dense(3), 0.5)


def test_sparsify_unbuilt_model():
  model = keras.Sequential([L.Dense(3), L.Dense(2)])
  with pytest.raises(ValueError, match="built"):
    kr.sparsify(model, 0.5)


def test_sparsify_duplicate_names_in_nested_models():
  inner = keras.Sequential([keras.Input((4,)), L.Dense(4, name="same")], name="inner")
  inputs = keras.Input((4,))
  outputs = L.Dense(2, name="same")(inner(inputs))
  model = keras.Model(inputs, outputs)
  with pytest.raises(ValueError, match=r"\['same'\].*more than once"):
    kr.sparsify(model, 0.5)


def test_sparse_model_trains_and_keeps_zeros(mlp, toy_dataset):
  sparse = kr.sparsify(mlp, 0.8, "erk")
  sparse.compile(optimizer=keras.optimizers.Adam(0.01), loss=sparse_ce())
  sparse.fit(toy_dataset, epochs=1, verbose=0)
  for weight, mask in masked_pairs(sparse):
    assert np.all(weight[mask == 0] == 0)


# ------------------------------------------------------------------ strip


@pytest.mark.parametrize("builder,shape", [
    (make_mlp, (4, 12)), (_functional, (2, 8, 8, 3)), (_nested, (3, 10))])
def test_strip_gives_plain_layers_with_identical_outputs(builder, shape):
  model = builder()
  sparse = kr.sparsify(model, 0.75, "erk")
  # Move the stored weights away from W * M: strip must still use the masks.
  for layer in walk_layers(sparse):
    if isinstance(layer, SparseWrapper):
      for weight, _ in layer.masked_weights:
        weight.assign(np.asarray(weight) + 0.5)
  x = np.random.default_rng(1).normal(size=shape).astype("float32")
  plain = kr.strip(sparse)
  assert not any(isinstance(l, SparseWrapper) for l in walk_layers(plain))
  assert [type(l).__name__ for l in walk_layers(plain)] == [
      type(l).__name__ for l in walk_layers(model)]
  # (Keras 3's clone_model renames auto-named InputLayers; others keep names.)
  names = lambda m: [l.name for l in walk_layers(m) if not isinstance(l, L.InputLayer)]
  assert names(plain) == names(model)
  np.testing.assert_allclose(np.asarray(plain(x, training=False)),
                             np.asarray(sparse(x, training=False)),
                             rtol=1e-5, atol=1e-5)
  # The plain kernels are exactly W * M.
  plain_layers = _by_name(plain)
  for name, wrapper in _wrappers(sparse).items():
    plain_weights = {v.name.split("/")[-1].split(":")[0]: np.asarray(v)
                     for v in plain_layers[name].weights}
    for key, (weight, mask) in zip(wrapper.weight_keys, wrapper.masked_weights):
      np.testing.assert_array_equal(plain_weights[key],
                                    np.asarray(weight) * np.asarray(mask))
  # Stripping a model without wrappers is a plain copy.
  again = kr.strip(plain)
  np.testing.assert_allclose(np.asarray(again(x, training=False)),
                             np.asarray(plain(x, training=False)), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ report


def test_sparsity_report_rows_and_totals():
  model = _functional()
  sparse = kr.sparsify(model, 0.8, "uniform", exclude=["fc"])
  report = kr.sparsity_report(sparse)
  rows = {(r.name, r.weight): r for r in report}
  assert len(report) == len(FUNCTIONAL_SHAPES) == len(rows)
  for full, shape in FUNCTIONAL_SHAPES.items():
    name, _, key = full.partition("/")
    row = rows[(name, key or "kernel")]
    size = int(np.prod(shape))
    assert row.shape == shape and row.size == size
    if name == "fc":  # Excluded: plain layer, every weight non-zero.
      assert row.nnz == np.count_nonzero(np.asarray(_by_name(sparse)["fc"].kernel))
      assert row.nnz == size
    else:
      assert row.nnz == size - math.floor(0.8 * size)
      assert row.sparsity == pytest.approx(math.floor(0.8 * size) / size)
  assert report.size == sum(r.size for r in report)
  assert report.nnz == sum(r.nnz for r in report)
  assert report.sparsity == pytest.approx(1 - report.nnz / report.size)
  assert report[0].name == "conv1"
  text = str(report)
  assert "total" in text and "sparsity" in text
  assert text.splitlines()[-1].startswith("total")
  assert f"{report.nnz:,}" in text.splitlines()[-1]
  for name in ("conv1", "sep", "branch_a", "fc"):
    assert name in text


def test_sparsity_report_plain_model_counts_non_zeros(mlp):
  mlp.layers[0].kernel.assign(np.zeros((12, 24), "float32"))
  report = kr.sparsity_report(mlp)
  assert [r.name for r in report] == ["fc1", "fc2", "logits"]
  assert report[0].nnz == 0 and report[0].sparsity == 1.0
  assert report[1].nnz == 24 * 24


# ------------------------------------------------------------------ export


def _export_model():
  keras.utils.set_random_seed(0)
  model = keras.Sequential([
      keras.Input((12,)),
      L.Dense(20, activation="relu", name="fc1"),
      L.Dense(16, activation="relu", name="fc2"),
      L.Dense(3, name="logits"),
  ])
  return kr.sparsify(model, 0.7, "uniform")


def test_export_saved_model(tmp_path):
  sparse = _export_model()
  x = np.random.default_rng(0).normal(size=(5, 12)).astype("float32")
  expected = np.asarray(sparse(x))
  path = str(tmp_path / "saved")
  assert kr.export(sparse, path) == path
  served = tf.saved_model.load(path)
  fn = served.signatures["serving_default"]
  (input_name,) = fn.structured_input_signature[1].keys()
  outputs = fn(**{input_name: tf.constant(x)})
  (output,) = outputs.values()
  np.testing.assert_allclose(np.asarray(output), expected, rtol=1e-5, atol=1e-5)
  # The stored kernels are W * M: exactly zero where masked, no masks saved.
  stored = tf.train.load_checkpoint(f"{path}/variables/variables")
  shapes = stored.get_variable_to_shape_map()
  assert not any("mask" in name for name in shapes)
  for wrapper in _wrappers(sparse).values():
    (weight, mask), = wrapper.masked_weights
    mask = np.asarray(mask)
    matches = [n for n, s in shapes.items() if tuple(s) == tuple(weight.shape)]
    assert matches, (wrapper.name, shapes)
    for name in matches:
      value = stored.get_tensor(name)
      assert np.all(value[mask == 0] == 0.0)
      np.testing.assert_array_equal(value, np.asarray(weight) * mask)


def test_export_tflite(tmp_path):
  sparse = _export_model()
  x = np.random.default_rng(1).normal(size=(4, 12)).astype("float32")
  expected = np.asarray(sparse(x))
  path = str(tmp_path / "sub" / "model.tflite")
  assert kr.export(sparse, path, format="tflite") == path
  interpreter = tf.lite.Interpreter(model_path=path)
  (inp,) = interpreter.get_input_details()
  interpreter.resize_tensor_input(inp["index"], list(x.shape))
  interpreter.allocate_tensors()
  interpreter.set_tensor(inp["index"], x)
  interpreter.invoke()
  (out,) = interpreter.get_output_details()
  np.testing.assert_allclose(interpreter.get_tensor(out["index"]), expected,
                             rtol=1e-4, atol=1e-4)


def test_export_bad_format(tmp_path):
  with pytest.raises(ValueError, match=r"Unknown export format 'onnx'"):
    kr.export(_export_model(), str(tmp_path / "x"), format="onnx")
