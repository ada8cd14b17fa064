"""MultiHeadAttention (and EinsumDense) under SparseWrapper / sparsify."""

import numpy as np
import pytest
import tensorflow as tf

import keras_rigl as kr
from keras_rigl._keras import keras
from keras_rigl.wrapper import distribution_shapes

L = keras.layers
KEYS = ["query_kernel", "key_kernel", "value_kernel", "output_kernel"]


def _zeros(array):
  return int(np.sum(np.asarray(array) == 0))


def _decoder(vocab=16, length=6, d=8, heads=2):
  inputs = keras.Input((length,), dtype="int32")
  h = L.Embedding(vocab, d, name="embed")(inputs)
  a = L.MultiHeadAttention(heads, d // heads, name="mha")(h, h, use_causal_mask=True)
  h = L.LayerNormalization(name="norm")(h + a)
  h = L.Dense(16, activation="relu", name="ff1")(h)
  h = L.Dense(d, name="ff2")(h)
  return keras.Model(inputs, L.Dense(vocab, name="logits")(h))


def _data(vocab=16, n=64, seed=0):
  r = np.random.default_rng(seed)
  x = r.integers(0, vocab, size=(n, 6)).astype("int32")
  return tf.data.Dataset.from_tensor_slices((x, np.roll(x, -1, axis=1))).batch(
      16, drop_remainder=True)


def _loss():
  return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_wrapper_masks_every_projection_and_not_biases():
  layer = kr.SparseWrapper(L.MultiHeadAttention(2, 4, name="mha"), sparsity=0.6)
  q = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
  y = np.asarray(layer(q, q))
  assert layer.weight_keys == KEYS
  for weight, mask in layer.masked_weights:
    assert _zeros(mask) == int(np.floor(0.6 * int(np.prod(weight.shape))))
    assert np.all(np.asarray(weight)[np.asarray(mask) == 0] == 0)
  masked = {id(w) for w, _ in layer.masked_weights}
  biases = [w for w in layer.layer.weights if id(w) not in masked]
  assert len(biases) == 4 and all("bias" in w.name for w in biases)
  # Garbage behind the masks does not change the output.
  for weight, mask in layer.masked_weights:
    value = np.asarray(weight)
    value[np.asarray(mask) == 0] = 50.0
    weight.assign(value)
  np.testing.assert_allclose(np.asarray(layer(q, q)), y, rtol=1e-5, atol=1e-5)


def test_cross_attention_with_a_prebuilt_layer():
  mha = L.MultiHeadAttention(2, 4)
  query = np.ones((2, 3, 8), "float32")
  value = np.ones((2, 5, 6), "float32")
  mha(query, value)  # Builds for these shapes.
  layer = kr.SparseWrapper(mha, sparsity=0.5)
  assert layer(query, value).shape == (2, 3, 8)
  assert tuple(layer.masked_weights[2][0].shape) == (6, 2, 4)


def test_sparsify_decoder_and_erk_uses_matrix_shapes():
  model = kr.sparsify(_decoder(), 0.75, distribution="uniform", exclude=["embed"])
  wrapper = model.get_layer("sparse_mha")
  assert wrapper.weight_keys == KEYS
  assert distribution_shapes(wrapper.layer) == {
      "query_kernel": (8, 8), "key_kernel": (8, 8), "value_kernel": (8, 8),
      "output_kernel": (8, 8)}
  erk = kr.sparsify(_decoder(), 0.75, distribution="erk", exclude=["embed"])
  rows = [r for r in kr.sparsity_report(erk) if r.name != "embed"]
  assert abs(1 - sum(r.nnz for r in rows) / sum(r.size for r in rows) - 0.75) < 0.01


def test_no_inactive_weight_moves_and_rigl_moves_attention_masks():
  keras.utils.set_random_seed(0)
  model = kr.sparsify(_decoder(), 0.75, distribution="uniform", exclude=["embed"])
  mha = model.get_layer("sparse_mha")
  before = [np.asarray(m).copy() for _, m in mha.masked_weights]
  data = _data()
  model.compile(keras.optimizers.Adam(0.01), _loss())
  model.fit(data, epochs=2, verbose=0,
            callbacks=[kr.RigLScheduler(data, update_freq=2, drop_fraction=0.3, end_step=6)])
  for (weight, mask), old in zip(mha.masked_weights, before):
    new = np.asarray(mask)
    assert new.sum() == old.sum()
    assert np.any(new != old)
    assert np.all(np.asarray(weight)[new == 0] == 0)


def test_attention_model_round_trips_keras_file_and_strip(tmp_path):
  keras.utils.set_random_seed(0)
  model = kr.sparsify(_decoder(), 0.75, distribution="erk", exclude=["embed"])
  model.compile(keras.optimizers.Adam(0.01), _loss())
  model.fit(_data(), epochs=1, verbose=0)
  x = next(iter(_data()))[0]
  y = np.asarray(model(x))
  path = str(tmp_path / "mha.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  np.testing.assert_allclose(np.asarray(loaded(x)), y, rtol=1e-5, atol=1e-5)
  for (_, m1), (_, m2) in zip(model.get_layer("sparse_mha").masked_weights,
                              loaded.get_layer("sparse_mha").masked_weights):
    np.testing.assert_array_equal(np.asarray(m1), np.asarray(m2))
  plain = kr.strip(loaded)
  assert isinstance(plain.get_layer("mha"), L.MultiHeadAttention)
  np.testing.assert_allclose(np.asarray(plain(x)), y, rtol=1e-5, atol=1e-5)
  clone = keras.models.clone_model(model)
  np.testing.assert_array_equal(
      [int(np.sum(np.asarray(m))) for _, m in clone.get_layer("sparse_mha").masked_weights],
      [int(np.sum(np.asarray(m))) for _, m in model.get_layer("sparse_mha").masked_weights])


def test_einsum_dense_wraps():
  layer = kr.SparseWrapper(L.EinsumDense("ab,bc->ac", output_shape=6, bias_axes="c"),
                           sparsity=0.5)
  layer(np.ones((2, 4), "float32"))
  (weight, mask), = layer.masked_weights
  assert _zeros(mask) == 12


def test_sparsity_report_counts_attention_kernels_once():
  report = kr.sparsity_report(_decoder())
  names = [(r.name, r.weight) for r in report]
  assert len(names) == len(set(names))
  assert ("mha", "query_kernel") in names
  assert not any(name in ("query", "key", "value", "attention_output")
                 for name, _ in names)
