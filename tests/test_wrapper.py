"""Tests for keras_rigl.wrapper.SparseWrapper (both Keras flavours)."""

import math
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import sparse_ce
from keras_rigl import SparseWrapper
from keras_rigl._keras import IS_KERAS3, keras

L = keras.layers

# (factory, input batch): every built-in layer type the wrapper promises.
LAYER_CASES = {
    "dense": (lambda: L.Dense(4, name="dense"), (2, 5)),
    "conv1d": (lambda: L.Conv1D(4, 3, name="conv1d"), (2, 8, 3)),
    "conv2d": (lambda: L.Conv2D(4, 3, padding="same", name="conv2d"), (2, 6, 6, 3)),
    "conv3d": (lambda: L.Conv3D(2, 2, name="conv3d"), (1, 4, 4, 4, 2)),
    "conv2d_transpose": (lambda: L.Conv2DTranspose(3, 3, strides=2, name="conv2d_transpose"),
                         (2, 5, 5, 2)),
    "depthwise": (lambda: L.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise"),
                  (2, 6, 6, 3)),
    "separable": (lambda: L.SeparableConv2D(4, 3, depth_multiplier=2, name="separable"),
                  (2, 6, 6, 3)),
    "embedding": (lambda: L.Embedding(20, 6, name="embedding"), (2, 7)),
}
EXPECTED_KEYS = {
    "dense": ["kernel"], "conv1d": ["kernel"], "conv2d": ["kernel"],
    "conv3d": ["kernel"], "conv2d_transpose": ["kernel"],
    # Keras 3 names DepthwiseConv2D's weight "kernel", tf_keras "depthwise_kernel".
    "depthwise": ["kernel"] if IS_KERAS3 else ["depthwise_kernel"],
    "separable": ["depthwise_kernel", "pointwise_kernel"],
    "embedding": ["embeddings"],
}


def _inputs(name, shape, seed=0):
  r = np.random.default_rng(seed)
  if name == "embedding":
    return r.integers(0, 20, size=shape).astype("int32")
  return r.normal(size=shape).astype("float32")


def _short(variable):
  return variable.name.split("/")[-1].split(":")[0]


def _zeros(array):
  return int(np.sum(np.asarray(array) == 0))


@pytest.fixture
def float32_policy():
  """Restores the global dtype policy to float32 after the test."""
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy("float32")


# ------------------------------------------------------------ layer types


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_every_layer_type_wraps_with_exact_zero_counts(case):
  factory, shape = LAYER_CASES[case]
  x = _inputs(case, shape)
  wrapper = SparseWrapper(factory(), sparsity=0.6, seed=1)
  wrapper(x)
  assert wrapper.weight_keys == EXPECTED_KEYS[case]
  assert len(wrapper.masked_weights) == len(EXPECTED_KEYS[case])
  for weight, mask in wrapper.masked_weights:
    size = int(np.prod(weight.shape))
    mask = np.asarray(mask)
    assert mask.shape == tuple(weight.shape)
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert _zeros(mask) == math.floor(0.6 * size)
    # The stored weight is already W * M.
    assert np.all(np.asarray(weight)[mask == 0] == 0)
  # Biases are never masked.
  masked_ids = {id(w) for w, _ in wrapper.masked_weights}
  for variable in wrapper.layer.weights:
    if _short(variable) == "bias":
      assert id(variable) not in masked_ids
  expected_total = sum(math.floor(0.6 * int(np.prod(w.shape)))
                       for w, _ in wrapper.masked_weights)
  total = sum(int(np.prod(w.shape)) for w, _ in wrapper.masked_weights)
  assert wrapper.sparsity == pytest.approx(expected_total / total, abs=1e-9)


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_output_equals_plain_layer_with_masked_kernel(case):
  factory, shape = LAYER_CASES[case]
  x = _inputs(case, shape)
  wrapper = SparseWrapper(factory(), sparsity=0.5, seed=2)
  wrapper(x)
  # Give every weight (biases too) dense non-zero values, bypassing the mask
  # in the stored variables: the forward pass must still use W * M.
  r = np.random.default_rng(3)
  for variable in wrapper.layer.weights:
    variable.assign(r.normal(size=variable.shape).astype("float32") + 0.5)
  masks = {id(w): np.asarray(m) for w, m in wrapper.masked_weights}
  plain = wrapper.layer.__class__.from_config(wrapper.layer.get_config())
  plain(x)
  plain.set_weights([np.asarray(v) * masks[id(v)] if id(v) in masks else np.asarray(v)
                     for v in wrapper.layer.weights])
  np.testing.assert_allclose(np.asarray(wrapper(x)), np.asarray(plain(x)),
                             rtol=1e-5, atol=1e-5)
  # The dense layer (no mask) gives a different output: the mask matters.
  dense = wrapper.layer.__class__.from_config(wrapper.layer.get_config())
  dense(x)
  dense.set_weights([np.asarray(v) for v in wrapper.layer.weights])
  assert not np.allclose(np.asarray(wrapper(x)), np.asarray(dense(x)), atol=1e-3)
  # The bias is used as is: shifting it shifts the output.
  if any(_short(v) == "bias" for v in wrapper.layer.weights):
    before = np.asarray(wrapper(x))
    bias = [v for v in wrapper.layer.weights if _short(v) == "bias"][0]
    bias.assign(np.asarray(bias) + 1.0)
    if case in ("dense", "conv1d", "conv2d", "conv3d", "conv2d_transpose",
                "depthwise", "separable"):
      np.testing.assert_allclose(np.asarray(wrapper(x)), before + 1.0, atol=1e-4)


def test_separable_conv_masks_both_kernels_with_dict_sparsity():
  wrapper = SparseWrapper(L.SeparableConv2D(8, 3, depth_multiplier=2, name="sep"),
                          sparsity={"depthwise_kernel": 0.25, "pointwise_kernel": 0.9})
  wrapper(np.zeros((1, 5, 5, 4), "float32"))
  (dw, dw_mask), (pw, pw_mask) = wrapper.masked_weights
  assert tuple(dw.shape) == (3, 3, 4, 2) and tuple(pw.shape) == (1, 1, 8, 8)
  assert _zeros(dw_mask) == math.floor(0.25 * 72)
  assert _zeros(pw_mask) == math.floor(0.9 * 64)
  assert wrapper.sparsity == pytest.approx((18 + 57) / (72 + 64))


def test_mask_init_dense_gives_all_ones():
  wrapper = SparseWrapper(L.Dense(6, name="d"), sparsity=0.8, mask_init="dense")
  wrapper(np.ones((1, 4), "float32"))
  (_, mask), = wrapper.masked_weights
  np.testing.assert_array_equal(np.asarray(mask), np.ones((4, 6)))
  assert wrapper.sparsity == 0.0
  assert wrapper.target_sparsity == 0.8


# ------------------------------------------------------------ custom layers


class _CustomMatmul(L.Layer):
  """A layer that opts in through get_sparsifiable_weights()."""

  def __init__(self, units=3, **kwargs):
    super().__init__(**kwargs)
    self.units = units

  def build(self, input_shape):
    self.w = self.add_weight(name="w", shape=(int(input_shape[-1]), self.units),
                             initializer="ones")
    self.b = self.add_weight(name="b", shape=(self.units,), initializer="ones")
    self.built = True

  def call(self, x):
    return tf.matmul(x, self.w) + self.b

  def get_sparsifiable_weights(self):
    return [self.w]

  def get_config(self):
    config = super().get_config()
    config["units"] = self.units
    return config


class _NoProtocol(L.Layer):

  def build(self, input_shape):
    self.w = self.add_weight(name="w", shape=(int(input_shape[-1]), 2))

  def call(self, x):
    return tf.matmul(x, self.w)


class _HiddenWeight(_CustomMatmul):
  """Returns a weight it does not hold as an attribute of its own."""

  def build(self, input_shape):
    self.held = [self.add_weight(name="w", shape=(int(input_shape[-1]), 3))]
    self.built = True

  def call(self, x):
    return tf.matmul(x, self.held[0])

  def get_sparsifiable_weights(self):
    return [self.held[0]]


def test_custom_layer_with_protocol():
  wrapper = SparseWrapper(_CustomMatmul(3, name="custom"), sparsity=0.5, seed=0)
  x = np.ones((2, 4), "float32")
  y = np.asarray(wrapper(x))
  assert wrapper.weight_keys == ["w"]
  (weight, mask), = wrapper.masked_weights
  assert weight is wrapper.layer.w
  assert _zeros(mask) == 6
  # Output: x @ (1 * M) + 1, i.e. per column (ones of the mask column) + 1.
  np.testing.assert_allclose(y, np.ones((2, 1)) * (np.asarray(mask).sum(0) + 1))


def test_custom_layer_without_protocol_names_it():
  with pytest.raises(ValueError, match="get_sparsifiable_weights"):
    SparseWrapper(_NoProtocol(name="plain"), sparsity=0.5)


def test_custom_layer_weight_not_an_attribute():
  wrapper = SparseWrapper(_HiddenWeight(name="hidden"), sparsity=0.5)
  with pytest.raises(ValueError, match="as an attribute"):
    wrapper(np.ones((2, 4), "float32"))


@pytest.mark.parametrize("factory,type_name", [
    (lambda: L.BatchNormalization(name="bn"), "BatchNormalization"),
    (lambda: L.ConvLSTM2D(2, 3, name="convlstm"), "ConvLSTM2D"),  # LSTM is supported.
    (lambda: L.LayerNormalization(name="ln"), "LayerNormalization"),
])
def test_unsupported_layer_error(factory, type_name):
  with pytest.raises(ValueError, match=rf"cannot wrap layer .* {type_name}.*get_sparsifiable_weights"):
    SparseWrapper(factory(), sparsity=0.5)


# ------------------------------------------------------------ argument errors


@pytest.mark.parametrize("bad", [1.0, -0.1, "a", float("nan"), 2])
def test_bad_sparsity(bad):
  with pytest.raises(ValueError, match=r"sparsity must be .*\[0, 1\)"):
    SparseWrapper(L.Dense(3), sparsity=bad)


def test_bad_sparsity_in_dict_names_the_weight():
  with pytest.raises(ValueError, match=r"sparsity\['kernel'\]"):
    SparseWrapper(L.Dense(3), sparsity={"kernel": 1.0})


def test_bad_mask_init():
  with pytest.raises(ValueError, match=r"mask_init must be one of .*'zeros'"):
    SparseWrapper(L.Dense(3), sparsity=0.5, mask_init="zeros")


def test_dict_sparsity_missing_or_unknown_weight():
  wrapper = SparseWrapper(L.SeparableConv2D(2, 3), sparsity={"depthwise_kernel": 0.5})
  with pytest.raises(ValueError, match="pointwise_kernel"):
    wrapper(np.zeros((1, 5, 5, 2), "float32"))
  wrapper = SparseWrapper(L.Dense(2), sparsity={"kernel": 0.5, "bias": 0.5})
  with pytest.raises(ValueError, match=r"sparsity names \['bias'\]"):
    wrapper(np.zeros((1, 3), "float32"))


# ------------------------------------------------------------ properties


def test_masked_weights_and_sparsity_properties():
  wrapper = SparseWrapper(L.Dense(10, name="fc"), sparsity=0.9)
  wrapper(np.ones((1, 20), "float32"))
  (weight, mask), = wrapper.masked_weights
  assert weight is wrapper.layer.kernel
  assert tuple(weight.shape) == (20, 10)
  assert weight.trainable and not mask.trainable
  assert wrapper.sparsity == pytest.approx(0.9)
  # The mask is non-trainable and tracked by the wrapper; the kernel is not
  # duplicated among the trainable weights.
  assert any(m is mask for m in wrapper.non_trainable_weights)
  assert not any(m is mask for m in wrapper.trainable_weights)
  assert len(wrapper.trainable_weights) == 2  # kernel, bias
  assert len(wrapper.non_trainable_weights) == 1  # the mask
  assert len(wrapper.weights) == 3
  # sparsity follows the mask.
  mask.assign(np.ones((20, 10), "float32"))
  assert wrapper.sparsity == 0.0
  assert wrapper.name == "sparse_fc"


# ------------------------------------------------------------ determinism


def test_same_seed_same_masks_regardless_of_build_order():
  def wrappers(seed):
    return (SparseWrapper(L.Dense(7, name="a"), sparsity=0.7, seed=seed),
            SparseWrapper(L.Dense(9, name="b"), sparsity=0.7, seed=seed))

  a1, b1 = wrappers(5)
  a1.build((None, 6))
  b1.build((None, 8))
  a2, b2 = wrappers(5)
  b2.build((None, 8))  # Other order.
  a2.build((None, 6))
  np.testing.assert_array_equal(np.asarray(a1.masked_weights[0][1]),
                                np.asarray(a2.masked_weights[0][1]))
  np.testing.assert_array_equal(np.asarray(b1.masked_weights[0][1]),
                                np.asarray(b2.masked_weights[0][1]))
  # Another seed, or another layer name, moves the positions.
  a3, _ = wrappers(6)
  a3.build((None, 6))
  assert not np.array_equal(np.asarray(a1.masked_weights[0][1]),
                            np.asarray(a3.masked_weights[0][1]))
  c = SparseWrapper(L.Dense(7, name="c"), sparsity=0.7, seed=5)
  c.build((None, 6))
  assert not np.array_equal(np.asarray(a1.masked_weights[0][1]),
                            np.asarray(c.masked_weights[0][1]))
  # The keras global seed plays no part in the mask positions.
  keras.utils.set_random_seed(123)
  a4, _ = wrappers(5)
  a4.build((None, 6))
  np.testing.assert_array_equal(np.asarray(a1.masked_weights[0][1]),
                                np.asarray(a4.masked_weights[0][1]))


# ------------------------------------------------------------ config, saving


def test_get_config_from_config_round_trip():
  wrapper = SparseWrapper(L.Dense(5, name="fc"), sparsity=0.75, seed=11,
                          mask_init="random", name="my_wrapper")
  x = np.ones((2, 3), "float32")
  wrapper(x)
  config = wrapper.get_config()
  assert config["sparsity"] == 0.75 and config["seed"] == 11
  assert config["mask_init"] == "random" and config["name"] == "my_wrapper"
  clone = SparseWrapper.from_config(config)
  assert clone.get_config()["sparsity"] == 0.75
  assert clone.seed == 11 and clone.name == "my_wrapper"
  assert isinstance(clone.layer, L.Dense) and clone.layer.units == 5
  clone(x)
  # Same seed and inner name: same mask positions.
  np.testing.assert_array_equal(np.asarray(clone.masked_weights[0][1]),
                                np.asarray(wrapper.masked_weights[0][1]))
  # Through the generic Keras (de)serialisation too.
  restored = keras.layers.deserialize(keras.layers.serialize(wrapper))
  assert isinstance(restored, SparseWrapper) and restored.target_sparsity == 0.75


def test_get_config_round_trip_dict_sparsity():
  sparsity = {"depthwise_kernel": 0.5, "pointwise_kernel": 0.8}
  wrapper = SparseWrapper(L.SeparableConv2D(4, 3, name="sep"), sparsity=sparsity,
                          seed=2, mask_init="dense")
  clone = SparseWrapper.from_config(wrapper.get_config())
  assert clone.target_sparsity == sparsity
  assert clone.mask_init == "dense"
  clone(np.ones((1, 5, 5, 2), "float32"))
  assert [_zeros(m) for _, m in clone.masked_weights] == [0, 0]


def _model(seed=0):
  keras.utils.set_random_seed(seed)
  return keras.Sequential([
      keras.Input((6,)),
      SparseWrapper(L.Dense(8, activation="relu", name="fc1"), sparsity=0.6, seed=4),
      SparseWrapper(L.Dense(3, name="fc2"), sparsity=0.5, seed=4),
  ])


def _reshuffle_masks(model):
  """Moves every mask to new positions (same count), so that a restore that
  regenerated masks from the seed instead of loading them would be caught."""
  for layer in model.layers:
    for weight, mask in layer.masked_weights:
      m = np.asarray(mask)
      new = np.random.default_rng(99).permutation(m.ravel()).reshape(m.shape)
      mask.assign(new)
      weight.assign(np.asarray(weight) * new + 0.0)
  return [np.asarray(m) for layer in model.layers for _, m in layer.masked_weights]


def _masks(model):
  return [np.asarray(m) for layer in model.layers
          if isinstance(layer, SparseWrapper) for _, m in layer.masked_weights]


def test_keras_file_round_trip(tmp_path):
  model = _model()
  r = np.random.default_rng(0)
  for variable in model.trainable_weights:
    variable.assign(r.normal(size=variable.shape).astype("float32"))
  masks = _reshuffle_masks(model)
  x = r.normal(size=(4, 6)).astype("float32")
  expected = np.asarray(model(x))
  path = str(tmp_path / "model.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  assert all(isinstance(l, SparseWrapper) for l in loaded.layers)
  for a, b in zip(_masks(loaded), masks):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(np.asarray(loaded(x)), expected, rtol=1e-6, atol=1e-6)
  assert [l.target_sparsity for l in loaded.layers] == [0.6, 0.5]
  # Masks stay non-trainable after loading.
  for layer in loaded.layers:
    for _, mask in layer.masked_weights:
      assert not mask.trainable


def test_save_weights_load_weights(tmp_path):
  model = _model()
  masks = _reshuffle_masks(model)
  x = np.random.default_rng(1).normal(size=(4, 6)).astype("float32")
  expected = np.asarray(model(x))
  path = str(tmp_path / "sparse.weights.h5")
  model.save_weights(path)
  other = _model(seed=7)
  assert not np.allclose(np.asarray(other(x)), expected)
  other.load_weights(path)
  for a, b in zip(_masks(other), masks):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(np.asarray(other(x)), expected, rtol=1e-6, atol=1e-6)


def test_tf_train_checkpoint(tmp_path):
  model = _model()
  masks = _reshuffle_masks(model)
  x = np.random.default_rng(2).normal(size=(4, 6)).astype("float32")
  expected = np.asarray(model(x))
  path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
  other = _model(seed=8)
  status = tf.train.Checkpoint(model=other).read(path)
  status.assert_existing_objects_matched()
  for a, b in zip(_masks(other), masks):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(np.asarray(other(x)), expected, rtol=1e-6, atol=1e-6)
  # The masks are in the checkpoint under their own names.
  names = [name for name, _ in tf.train.list_variables(path)]
  assert sum("kernel_mask" in name for name in names) == 2, names


# ------------------------------------------------------------ training


def _sparse_mlp(constraint=None, initializer="glorot_uniform"):
  keras.utils.set_random_seed(0)
  return keras.Sequential([
      keras.Input((12,)),
      SparseWrapper(L.Dense(16, activation="relu", name="fc1",
                            kernel_constraint=constraint,
                            kernel_initializer=initializer), sparsity=0.7, seed=1),
      SparseWrapper(L.Dense(16, activation="relu", name="fc2"), sparsity=0.5, seed=1),
      SparseWrapper(L.Dense(3, name="logits"), sparsity=0.4, seed=1),
  ])


def _check_inactive_zero_and_trained(model, before):
  after = _masks(model)
  for (m0, w0), m1 in zip(before, after):
    np.testing.assert_array_equal(m0, m1)  # No scheduler: masks are fixed.
  changed = False
  for layer, (m0, w0) in zip(model.layers, before):
    (weight, mask), = layer.masked_weights
    w = np.asarray(weight)
    m = np.asarray(mask)
    assert np.all(w[m == 0] == 0.0), layer.name  # Exactly zero, not tiny.
    changed |= not np.allclose(w[m == 1], w0[m == 1])
  assert changed  # The active weights did train.


OPTIMIZERS = {
    "sgd_momentum": lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
    "adam": lambda: keras.optimizers.Adam(0.01),
    "adamw": lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),
    "rmsprop": lambda: keras.optimizers.RMSprop(0.01, momentum=0.5),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_inactive_weights_stay_zero_after_fit(name, toy_dataset):
  model = _sparse_mlp()
  before = [(np.asarray(m), np.asarray(w)) for layer in model.layers
            for w, m in layer.masked_weights]
  model.compile(optimizer=OPTIMIZERS[name](), loss=sparse_ce())
  model.fit(toy_dataset, epochs=2, verbose=0)
  _check_inactive_zero_and_trained(model, before)


def test_inactive_weights_stay_zero_with_mixed_precision(toy_dataset, float32_policy):
  del float32_policy
  keras.mixed_precision.set_global_policy("mixed_float16")
  model = _sparse_mlp()
  wrapper = model.layers[0]
  assert wrapper.compute_dtype == "float16"
  assert wrapper.masked_weights[0][0].dtype == tf.float32  # Variables stay float32.
  before = [(np.asarray(m), np.asarray(w)) for layer in model.layers
            for w, m in layer.masked_weights]
  model.compile(optimizer=keras.optimizers.Adam(0.01), loss=sparse_ce())
  model.fit(toy_dataset, epochs=2, verbose=0)
  assert "LossScaleOptimizer" in type(model.optimizer).__name__
  _check_inactive_zero_and_trained(model, before)
  out = model(np.ones((2, 12), "float32"))
  assert out.dtype == tf.float16


def test_user_kernel_constraint_keeps_working(toy_dataset):
  constraint = keras.constraints.MaxNorm(0.5)
  model = _sparse_mlp(constraint=constraint,
                      initializer=keras.initializers.RandomNormal(stddev=2.0))
  (weight, mask), = model.layers[0].masked_weights
  assert np.linalg.norm(np.asarray(weight), axis=0).max() > 1.0  # Violated at start.
  before = [(np.asarray(m), np.asarray(w)) for layer in model.layers
            for w, m in layer.masked_weights]
  model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=sparse_ce())
  model.fit(toy_dataset, epochs=1, verbose=0)
  w = np.asarray(weight)
  assert np.linalg.norm(w, axis=0).max() <= 0.5 + 1e-5  # MaxNorm applied.
  _check_inactive_zero_and_trained(model, before)
  # The layer still reports its own constraint in its config.
  config = model.layers[0].layer.get_config()
  assert config["kernel_constraint"] is not None
