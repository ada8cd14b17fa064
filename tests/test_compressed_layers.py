"""Compressed layers: storage, O(nnz) graphs, forward pass, round trips, errors."""

import os

import numpy as np
import pytest
import tensorflow as tf

import keras_rigl as kr
from keras_rigl import _keras
from keras_rigl._keras import keras
from keras_rigl.layers.positions import sample_positions

from conftest import sparse_ce


def largest_static_tensor(graph):
  """Most elements any tensor in `graph` (and its nested functions) can hold.

  Unknown dims count as 1, so this is a lower bound on each tensor's size:
  enough to catch anything shaped like the dense kernel.
  """
  biggest, seen = 0, set()

  def walk(g):
    nonlocal biggest
    if id(g) in seen:
      return
    seen.add(id(g))
    for op in g.get_operations():
      for t in op.outputs:
        if t.shape.rank is not None:
          biggest = max(biggest, int(np.prod([d or 1 for d in t.shape.as_list()])))
    for fn in getattr(g, "_functions", {}).values():
      inner = getattr(fn, "graph", None)
      if inner is not None:
        walk(inner)
  walk(graph)
  return biggest


def test_stores_only_values_and_positions():
  layer = kr.layers.SparseDense(300, sparsity=0.9, name="fc")
  layer.build((None, 784))
  n = 784 * 300
  shapes = {v.name.split("/")[-1].split(":")[0]: tuple(v.shape) for v in layer.weights}
  nnz = n - int(np.floor(0.9 * n))
  assert shapes == {"kernel_values": (nnz,), "kernel_indices": (nnz,), "bias": (300,)}
  assert max(int(np.prod(v.shape)) for v in layer.weights) < n
  indices = np.asarray(layer.kernel_indices)
  assert indices.dtype == np.int32
  assert len(np.unique(indices)) == nnz and indices.min() >= 0 and indices.max() < n
  assert [v.name for v in layer.trainable_weights] == [layer.kernel_values.name, layer.bias.name]
  assert layer.sparsity == pytest.approx(1 - nnz / n)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.999])
def test_exact_count_and_seeded_positions(sparsity):
  a = kr.layers.SparseDense(40, sparsity=sparsity, seed=3, name="x")
  b = kr.layers.SparseDense(40, sparsity=sparsity, seed=3, name="x")
  c = kr.layers.SparseDense(40, sparsity=sparsity, seed=4, name="x")
  for layer in (a, b, c):
    layer.build((None, 60))
  n = 2400
  assert a.kernel_values.shape[0] == n - int(np.floor(sparsity * n))
  np.testing.assert_array_equal(np.asarray(a.kernel_indices), np.asarray(b.kernel_indices))
  if 0 < sparsity < 0.999:
    assert not np.array_equal(np.asarray(a.kernel_indices), np.asarray(c.kernel_indices))


def test_initialisation_graph_is_o_nnz():
  n = 50_000 * 40_000  # 2e9 positions: only nnz-sized tensors may exist.
  fn = tf.function(lambda: sample_positions(n, 2000, seed=(0, 1)))
  graph = fn.get_concrete_function().graph
  assert largest_static_tensor(graph) < 100_000
  positions = fn().numpy()
  assert len(np.unique(positions)) == 2000 and positions.max() < n


def test_init_values_follow_dense_fans():
  layer = kr.layers.SparseDense(500, sparsity=0.95, kernel_initializer="glorot_normal",
                                seed=1)
  layer.build((None, 1500))
  # glorot_normal: std sqrt(2 / (fan_in + fan_out)) of the DENSE kernel.
  expected = np.sqrt(2.0 / 2000)
  assert np.std(np.asarray(layer.kernel_values)) == pytest.approx(expected, rel=0.05)


def _dense_of(layer):
  return layer.compressed_weights[0].dense()


def test_forward_matches_dense_kernel():
  layer = kr.layers.SparseDense(7, sparsity=0.7, activation="relu",
                                bias_initializer="random_normal")
  x = np.random.default_rng(0).normal(size=(5, 3, 11)).astype("float32")
  y = layer(x).numpy()
  expected = np.maximum(x @ _dense_of(layer) + np.asarray(layer.bias), 0)
  np.testing.assert_allclose(y, expected, atol=1e-5)


def test_pointwise_conv_and_embedding_match_dense():
  conv = kr.layers.SparsePointwiseConv2D(6, sparsity=0.6)
  x = np.random.default_rng(0).normal(size=(2, 4, 5, 3)).astype("float32")
  y = conv(x).numpy()
  kernel = _dense_of(conv)
  assert kernel.shape == (1, 1, 3, 6)
  np.testing.assert_allclose(y, np.einsum("bhwc,cd->bhwd", x, kernel[0, 0]),
                             atol=1e-5)
  emb = kr.layers.SparseEmbedding(50, 8, sparsity=0.8)
  ids = np.array([[0, 49, 3], [3, 3, 7]])
  out = emb(ids).numpy()
  np.testing.assert_array_equal(out, _dense_of(emb)[ids])


def test_forward_and_backward_graph_never_dense():
  n_in, n_out = 512, 256
  layer = kr.layers.SparseDense(n_out, sparsity=0.95)
  layer.build((None, n_in))

  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.square(layer(x)))
    return tape.gradient(loss, [layer.kernel_values, layer.bias])

  x = tf.random.normal([4, n_in])
  graph = step.get_concrete_function(tf.TensorSpec([4, n_in])).graph
  assert largest_static_tensor(graph) < n_in * n_out
  grads = step(x)
  # d/dvalues of sum(y^2) = 2 * x[:, i]^T y[:, j] at each stored (i, j).
  y = layer(x).numpy() - np.asarray(layer.bias)
  positions = np.asarray(layer.kernel_indices)
  i, j = positions // n_out, positions % n_out
  expected = 2 * np.sum(x.numpy()[:, i] * y[:, j], axis=0)
  np.testing.assert_allclose(grads[0].numpy(), expected, rtol=1e-4, atol=1e-4)


def _model():
  return keras.Sequential([
      keras.Input((12,)),
      kr.layers.SparseDense(16, sparsity=0.8, activation="relu", name="a"),
      kr.layers.SparseDense(3, sparsity=0.5, name="b"),
  ])


def test_get_config_round_trip():
  layer = kr.layers.SparseDense(9, sparsity=0.75, activation="tanh", seed=5,
                                kernel_regularizer="l2", block_size=1000, name="s")
  clone = kr.layers.SparseDense.from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()
  for cls, args in ((kr.layers.SparseEmbedding, (10, 4)),
                    (kr.layers.SparsePointwiseConv2D, (5,))):
    layer = cls(*args, sparsity=0.5, seed=2)
    assert cls.from_config(layer.get_config()).get_config() == layer.get_config()


def test_keras_file_and_checkpoint_round_trip(tmp_path, toy_dataset):
  model = _model()
  model.compile(keras.optimizers.Adam(0.01), sparse_ce())
  model.fit(toy_dataset, epochs=1, verbose=0,
            callbacks=[kr.RigLScheduler(toy_dataset, update_freq=2, end_step=8)])
  x = np.ones((2, 12), "float32")
  path = os.path.join(tmp_path, "m.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)
  for a, b in zip(model.layers, loaded.layers):
    np.testing.assert_array_equal(np.asarray(a.kernel_indices), np.asarray(b.kernel_indices))
  other = _model()
  tf.train.Checkpoint(model=model).write(os.path.join(tmp_path, "ckpt"))
  tf.train.Checkpoint(model=other).read(os.path.join(tmp_path, "ckpt")).expect_partial()
  np.testing.assert_allclose(other(x).numpy(), model(x).numpy(), atol=1e-6)


def test_mixed_precision():
  policy = "mixed_float16"
  if _keras.IS_KERAS3:
    layer = kr.layers.SparseDense(8, sparsity=0.5, dtype=policy)
  else:
    layer = kr.layers.SparseDense(8, sparsity=0.5,
                                  dtype=keras.mixed_precision.Policy(policy))
  y = layer(tf.ones([2, 4]))
  assert y.dtype == tf.float16
  assert tf.as_dtype(layer.kernel_values.dtype) == tf.float32


@pytest.mark.parametrize("make, says", [
    (lambda: kr.layers.SparseDense(0), "units"),
    (lambda: kr.layers.SparseDense(4, sparsity=1.0), "sparsity"),
    (lambda: kr.layers.SparseDense(4, seed="a"), "seed"),
    (lambda: kr.layers.SparseDense(4, block_size=0), "block_size"),
    (lambda: kr.layers.SparsePointwiseConv2D(4, strides=2), "strides"),
    (lambda: kr.layers.SparseEmbedding(0, 3), "input_dim"),
])
def test_bad_arguments(make, says):
  with pytest.raises((ValueError, TypeError), match=says):
    make()


def test_non_elementwise_initializer_is_refused():
  layer = kr.layers.SparseDense(4, kernel_initializer="orthogonal")
  with pytest.raises(ValueError, match="element-wise"):
    layer.build((None, 4))
