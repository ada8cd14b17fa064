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
