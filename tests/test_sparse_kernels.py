"""sparse_matmul equals the dense x @ W, forward and backward, for every method.

The dense W exists only here, as the reference, at small sizes.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_rigl import _keras
from keras_rigl.layers import kernels

# The kernels are plain TensorFlow: nothing here depends on the Keras flavour.
# They run in the tf_keras pass only, which finishes before the Keras 3 pass
# (CI's critical path, where they took 90 s late in a full run, 5 s alone).
pytestmark = pytest.mark.skipif(_keras.FLAVOUR != "tf_keras",
                                reason="flavour-independent; run in the tf_keras pass")

ALL = kernels.METHODS + ("auto",)
N_IN, N_OUT, NNZ = 13, 11, 40


def problem(rng, n_in=N_IN, n_out=N_OUT, nnz=NNZ, sort=False, dtype=np.int32):
  idx = rng.choice(n_in * n_out, nnz, replace=False)
  idx = np.sort(idx) if sort else idx
  values = rng.standard_normal(nnz).astype(np.float32)
  w = np.zeros(n_in * n_out, np.float32)
  w[idx] = values
  return values, idx.astype(dtype), w.reshape(n_in, n_out)


def value_and_grads(fn, x, values, upstream):
  """y = fn(x, values) and the gradients of sum(y * upstream) w.r.t. x and values."""
  x, values = tf.constant(x), tf.constant(values)
  with tf.GradientTape() as tape:
    tape.watch([x, values])
    y = fn(x, values)
    loss = tf.reduce_sum(y * upstream)
  gx, gv = tape.gradient(loss, [x, values])
  return y.numpy(), gx.numpy(), gv.numpy()


def check(fn, x, values, idx, w, rng):
  up = rng.standard_normal(x.shape[:-1] + (w.shape[1],)).astype(np.float32)
  y, gx, gv = value_and_grads(fn, x, values, up)
  x2, up2 = x.reshape(-1, w.shape[0]), up.reshape(-1, w.shape[1])
  np.testing.assert_allclose(y, x @ w, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(gx, up @ w.T, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(gv, (x2.T @ up2).reshape(-1)[idx], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sort", [False, True], ids=["unsorted", "sorted"])
@pytest.mark.parametrize("method", ALL)
def test_equals_dense_forward_and_backward(method, sort, rng):
  values, idx, w = problem(rng, sort=sort)
  x = rng.standard_normal((5, N_IN)).astype(np.float32)
  check(lambda a, b: kernels.sparse_matmul(a, b, idx, N_IN, N_OUT, method=method),
        x, values, idx, w, rng)


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("shape", [(1, N_IN), (2, 3, N_IN), (1, 1, N_IN)],
                         ids=["batch1", "leading_dims", "batch1_leading"])
def test_batch_one_and_leading_dims(method, shape, rng):
  values, idx, w = problem(rng)
  x = rng.standard_normal(shape).astype(np.float32)
  fn = lambda a, b: kernels.sparse_matmul(a, b, idx, N_IN, N_OUT, method=method)  # pylint: disable=unnecessary-lambda-assignment
  check(fn, x, values, idx, w, rng)
  assert fn(x, values).shape == shape[:-1] + (N_OUT,)


@pytest.mark.parametrize("method", ALL)
def test_empty_batch(method, rng):
  values, idx, _ = problem(rng)
  y, gx, gv = value_and_grads(
      lambda a, b: kernels.sparse_matmul(a, b, idx, N_IN, N_OUT, method=method),
      np.zeros((0, N_IN), np.float32), values, np.zeros((0, N_OUT), np.float32))
  assert y.shape == (0, N_OUT) and gx.shape == (0, N_IN)
  np.testing.assert_array_equal(gv, np.zeros(NNZ))


@pytest.mark.parametrize("method", ALL)
def test_unknown_batch_in_tf_function(method, rng):
  values, idx, w = problem(rng)
  spec = [tf.TensorSpec([None, N_IN]), tf.TensorSpec([NNZ])]
  fn = tf.function(lambda a, b: kernels.sparse_matmul(a, b, idx, N_IN, N_OUT, method=method),
                   input_signature=spec)
  for batch in (1, 6):
    check(fn, rng.standard_normal((batch, N_IN)).astype(np.float32), values, idx, w, rng)


@pytest.mark.parametrize("method", ["auto", "gather", "dense"])
def test_jit_compile(method, rng):
  values, idx, w = problem(rng)
  x = rng.standard_normal((4, N_IN)).astype(np.float32)
  up = rng.standard_normal((4, N_OUT)).astype(np.float32)

  @tf.function(jit_compile=True)
  def step(a, b):
    with tf.GradientTape() as tape:
      tape.watch([a, b])
      y = kernels.sparse_matmul(a, b, idx, N_IN, N_OUT, method=method)
      loss = tf.reduce_sum(y * up)
    return (y, *tape.gradient(loss, [a, b]))

  y, gx, gv = (t.numpy() for t in step(tf.constant(x), tf.constant(values)))
  np.testing.assert_allclose(y, x @ w, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(gx, up @ w.T, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(gv, (x.T @ up).reshape(-1)[idx], rtol=1e-5, atol=1e-5)


def test_auto_detects_xla_and_avoids_ops_without_xla_kernels(rng):
  seen = []

  def probe(a):
    seen.append(kernels.in_xla_context())
    return a

  tf.function(probe, jit_compile=True)(tf.ones(1))
  tf.function(probe)(tf.ones(1))
  assert seen == [True, False] and not kernels.in_xla_context()
  # 98% sparse 4096^2 at batch 64: a non-XLA op without XLA, an XLA one with it.
  assert kernels.choose_method(4096, 4096, 335545, 64) not in kernels.XLA_METHODS
  assert kernels.choose_method(4096, 4096, 335545, 64, xla=True) in kernels.XLA_METHODS
  values, idx, _ = problem(rng)
  for method in set(kernels.METHODS) - set(kernels.XLA_METHODS):
    with pytest.raises(ValueError, match="jit_compile"):
      tf.function(lambda a, b, m=method: kernels.sparse_matmul(a, b, idx, N_IN, N_OUT, method=m),
                  jit_compile=True)(tf.ones([2, N_IN]), tf.constant(values))


@pytest.mark.parametrize("method", ["auto", "csr", "sparse_dense_matmul", "gather"])
def test_int64_indices_beyond_int32_range(method):
  """A [65536, 65536] kernel (2**32 positions) with 3 entries; nothing dense is built."""
  n = 65536
  idx = np.array([(n - 1) * n + 5, 7, 40000 * n + (n - 1)], np.int64)
  values = np.array([2.0, 3.0, -1.0], np.float32)
  x = np.zeros((2, n), np.float32)
  x[0, n - 1], x[1, 0], x[1, 40000] = 1.0, 1.0, 4.0
  y, _, gv = value_and_grads(
      lambda a, b: kernels.sparse_matmul(a, b, idx, n, n, method=method), x, values,
      np.ones((2, n), np.float32))
  expect = np.zeros((2, n), np.float32)
  expect[0, 5], expect[1, 7], expect[1, n - 1] = 2.0, 3.0, -4.0
  np.testing.assert_array_equal(y, expect)
  np.testing.assert_array_equal(gv, [1.0, 1.0, 4.0])
  assert kernels.index_dtype(n, n) == tf.int64


@pytest.mark.parametrize("method", ["auto", "csr", "dense", "gather"])
def test_int64_indices_small_kernel(method, rng):
  values, idx, w = problem(rng, dtype=np.int64)
  x = rng.standard_normal((3, N_IN)).astype(np.float32)
  check(lambda a, b: kernels.sparse_matmul(a, b, idx, N_IN, N_OUT, method=method),
        x, values, idx, w, rng)


def test_csr_with_precomputed_order(rng):
  values, idx, w = problem(rng)
  order = kernels.sort_order(idx)
  np.testing.assert_array_equal(np.asarray(idx)[order.numpy()], np.sort(idx))
  x = rng.standard_normal((4, N_IN)).astype(np.float32)
  check(lambda a, b: kernels.sparse_matmul(a, b, idx, N_IN, N_OUT, method="csr", order=order),
        x, values, idx, w, rng)


@pytest.mark.parametrize("batch", [1, 3, 50])
def test_sampled_matmul_chunks(batch, rng):
  x = rng.standard_normal((batch, 30)).astype(np.float32)
  dy = rng.standard_normal((batch, 20)).astype(np.float32)
  rows, cols = rng.integers(0, 30, 3000), rng.integers(0, 20, 3000)
  expect = (x.T @ dy)[rows, cols]
  for chunk_elements in (2**20, 1):  # one block, then 1024-entry chunks (map_fn)
    for jit in (False, True):
      fn = tf.function(lambda *a, c=chunk_elements: kernels.sampled_matmul(*a, chunk_elements=c),
                       jit_compile=jit)
      got = fn(tf.constant(x), tf.constant(dy), tf.constant(rows), tf.constant(cols))
      np.testing.assert_allclose(got.numpy(), expect, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["auto", "csr", "gather", "sparse_dense_matmul"])
def test_half_precision(method, rng):
  values, idx, w = problem(rng)
  x = rng.standard_normal((3, N_IN)).astype(np.float32)
  y = kernels.sparse_matmul(tf.constant(x, tf.float16), tf.constant(values, tf.float16), idx,
                            N_IN, N_OUT, method=method)
  assert y.dtype == tf.float16
  np.testing.assert_allclose(y.numpy().astype(np.float32), x @ w, rtol=2e-2, atol=2e-2)


def test_choose_method_rule():
  assert kernels.choose_method(4096, 4096, 335545, 1) == "gather"  # batch-1 inference
  assert kernels.choose_method(512, 512, 131072, 32) == "dense"  # small, 50% dense
  assert kernels.choose_method(16384, 16384, 2684355, 256) == "csr"
  assert kernels.choose_method(16384, 16384, 2684355, None) == "csr"
  assert kernels.choose_method(4096, 4096, 335545, 32) == "sparse_dense_matmul"
  assert kernels.choose_method(4096, 4096, 335545, 32, ordered=True) == "csr"
  assert kernels.choose_method(4096, 4096, 335545, 8, ordered=True) == "sparse_dense_matmul"
  assert kernels.choose_method(512, 512, 131072, 32, xla=True) == "dense"
  assert kernels.choose_method(4096, 4096, 335545, 32, xla=True) == "gather"


@pytest.mark.parametrize("kwargs, error, says", [
    (dict(method="fast"), ValueError, "method"),
    (dict(n_in=0), ValueError, "n_in"),
    (dict(n_out=2.5), ValueError, "n_out"),
    (dict(n_in=12), ValueError, "n_in=12"),
    (dict(values=np.zeros(NNZ, np.float64)), TypeError, "same dtype"),
    (dict(values=np.zeros(NNZ - 1, np.float32)), ValueError, "entries"),
    (dict(indices=np.zeros(NNZ, np.float32)), TypeError, "int32 or int64"),
    (dict(x=np.zeros((2, N_IN), np.int32)), TypeError, "float"),
])
def test_bad_inputs(kwargs, error, says, rng):
  values, idx, _ = problem(rng)
  args = dict(x=np.zeros((2, N_IN), np.float32), values=values, indices=idx, n_in=N_IN,
              n_out=N_OUT)
  args.update(kwargs)
  with pytest.raises(error, match=says):
    kernels.sparse_matmul(**args)


def test_int32_indices_refused_for_huge_kernels():
  with pytest.raises(TypeError, match="int64"):
    kernels.sparse_matmul(tf.zeros([1, 65536]), tf.ones([1]), tf.constant([0]), 65536, 65536)


def test_dense_method_refused_above_limit():
  with pytest.raises(ValueError, match="DENSE_LIMIT"):
    kernels.sparse_matmul(tf.zeros([1, 4096]), tf.ones([1]), tf.constant([0]), 4096, 4096,
                          method="dense")
