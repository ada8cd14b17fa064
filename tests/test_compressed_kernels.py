"""Compressed layers compute through kernels.sparse_matmul: the measured method, never dense, XLA too."""

import numpy as np
import pytest
import tensorflow as tf

import keras_rigl as kr
from keras_rigl.layers import kernels


@pytest.mark.parametrize("batch, expected", [(1, "gather"), (8, "sparse_dense_matmul"),
                                             (None, "csr"), (256, "csr")])
def test_small_kernels_never_pick_dense(batch, expected):
  # A 64 x 32 kernel at 50% would use "dense" in plain sparse_matmul.
  assert kernels.choose_method(64, 32, 1024, batch) == "dense" or batch == 1
  assert kernels.choose_method(64, 32, 1024, batch, allow_dense=False) == expected
  assert kernels.choose_method(64, 32, 1024, batch, xla=True, allow_dense=False) == "gather"


def _dense_kernel(layer):
  return layer.compressed_weights[0].dense()


def test_jit_compiled_training_step_matches_eager():
  layer = kr.layers.SparseDense(6, sparsity=0.5, seed=1)
  x = tf.constant(np.random.default_rng(0).normal(size=(16, 10)), tf.float32)
  layer(x)
  kernel = _dense_kernel(layer)

  def step(x):
    with tf.GradientTape() as tape:
      y = layer(x)
      loss = tf.reduce_sum(tf.square(y))
    return y, tape.gradient(loss, layer.trainable_variables)

  y_eager, grads_eager = step(x)
  y_xla, grads_xla = tf.function(step, jit_compile=True)(x)
  np.testing.assert_allclose(y_eager.numpy(), x.numpy() @ kernel + layer.bias.numpy(), atol=1e-5)
  np.testing.assert_allclose(y_xla.numpy(), y_eager.numpy(), atol=1e-5)
  for a, b in zip(grads_xla, grads_eager):
    np.testing.assert_allclose(tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy(),
                               atol=1e-4)


SORT_OPS = {"TopKV2", "TopK", "Sort", "XlaSort", "XlaVariadicSort"}


def graph_op_types(fn, *args):
  """Op types of a traced tf.function, its nested functions and gradients included."""
  graph_def = fn.get_concrete_function(*args).graph.as_graph_def()
  types = {node.op for node in graph_def.node}
  for function in graph_def.library.function:
    types.update(node.op for node in function.node_def)
  return types


def test_the_detector_sees_a_per_call_sort():
  idx = tf.constant([5, 0, 3])

  @tf.function
  def unsorted_csr(x, v):
    return kernels.sparse_matmul(x, v, idx, 3, 2, method="csr")

  assert graph_op_types(unsorted_csr, tf.TensorSpec([64, 3]), tf.TensorSpec([3])) & SORT_OPS


@pytest.mark.parametrize("batch", [1, 8, 64, None])
def test_no_sort_in_the_per_call_graph(batch):
  """Positions are kept ascending: forward and backward never sort them."""
  layer = kr.layers.SparseDense(300, sparsity=0.99)
  layer.build((None, 400))

  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(layer(x))
    return tape.gradient(loss, [x] + layer.trainable_variables)

  method = kernels.choose_method(400, 300, layer.compressed_weights[0].nnz, batch,
                                 ordered=True, allow_dense=False)
  assert not graph_op_types(step, tf.TensorSpec([batch, 400])) & SORT_OPS, method


def test_no_sort_in_the_embedding_lookup():
  emb = kr.layers.SparseEmbedding(500, 16, sparsity=0.9)
  emb.build()
  fn = tf.function(lambda ids: emb(ids))
  assert not graph_op_types(fn, tf.TensorSpec([None, 4], tf.int32)) & SORT_OPS


def test_sorted_csr_equals_dense(rng):
  n_in, n_out = 13, 11
  idx = np.sort(rng.choice(n_in * n_out, 40, replace=False)).astype(np.int32)
  values = rng.standard_normal(40).astype(np.float32)
  w = np.zeros(n_in * n_out, np.float32)
  w[idx] = values
  x = rng.standard_normal((5, n_in)).astype(np.float32)
  for method in ("csr", "auto"):
    y = kernels.sparse_matmul(x, values, idx, n_in, n_out, method=method, indices_sorted=True)
    np.testing.assert_allclose(y.numpy(), x @ w.reshape(n_in, n_out), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_in, n_out, nnz, block", [(13, 11, 40, 22), (13, 11, 143, 1000),
                                                     (50, 7, 5, 7), (9, 300, 900, 100)])
def test_blocked_values_gradient_equals_sampled(n_in, n_out, nnz, block, rng):
  idx = np.sort(rng.choice(n_in * n_out, nnz, replace=False)).astype(np.int32)
  x = rng.standard_normal((6, n_in)).astype(np.float32)
  dy = rng.standard_normal((6, n_out)).astype(np.float32)
  blocked = kernels.blocked_sampled_matmul(tf.constant(x), tf.constant(dy), tf.constant(idx),
                                           n_in, n_out, block_elements=block)
  np.testing.assert_allclose(blocked.numpy(), (x.T @ dy).reshape(-1)[idx], rtol=1e-5, atol=1e-5)


def test_dense_enough_layer_gradient_uses_blocked_products_and_is_exact(rng):
  layer = kr.layers.SparseDense(64, sparsity=0.5, seed=4)
  x = tf.constant(rng.standard_normal((40, 48)).astype(np.float32))
  layer(x)
  kernel = _dense_kernel(layer)
  fn = tf.function(lambda x: tf.gradients(tf.reduce_sum(layer(x) ** 2), layer.kernel_values)[0])
  ops = graph_op_types(fn, tf.TensorSpec([40, 48]))
  assert ops & {"TensorListConcatV2", "TensorArrayConcatV3"}  # The blocked path's pieces.
  grad = fn(x).numpy()
  y = x.numpy() @ kernel + layer.bias.numpy()
  expected = (x.numpy().T @ (2 * y)).reshape(-1)[np.asarray(layer.kernel_indices)]
  np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-3)
