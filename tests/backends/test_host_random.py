"""keras_rigl.host_random (numpy Philox) against TensorFlow's stateless ops.

The comparisons with TensorFlow run in the TensorFlow passes (Keras 3 and
tf_keras); on JAX / PyTorch the same numbers are checked against values
recorded from TensorFlow 2.21, without importing it.
"""

import numpy as np
import pytest

from keras_rigl import backend
from keras_rigl import host_random

SHAPES = [(), (0,), (1,), (3,), (4,), (5,), (7, 3), (2, 3, 5), (300, 784), (784, 300),
          (3, 3, 64, 128), (1000, 1), (13, 0, 4)]
SEEDS = [(0, 0), (0, 1), (1, 0), (3, 1234567), (2**31 - 1, 2**31 - 1), (-1, -2),
         (2**62 + 5, -2**40), (7, (1 << 40) + 300)]
RANGES = [(0.0, 1.0), (-1.7320508075688772, 1.7320508075688772), (-0.5, 2.0), (3.0, 3.5),
          (-1e-3, 1e-3)]

needs_tf = pytest.mark.skipif(not backend.IS_TENSORFLOW, reason="compares with "
                              "TensorFlow's own op: runs in the TensorFlow passes")


def tf_uniform(shape, seed, low=0.0, high=1.0, dtype="float32"):
  tf = backend.tf
  with tf.device("/CPU:0"):
    return tf.random.stateless_uniform(list(shape), seed=tf.constant(seed, tf.int64),
                                       minval=low, maxval=high, dtype=dtype).numpy()


def tf_normal(shape, seed, dtype="float32"):
  tf = backend.tf
  with tf.device("/CPU:0"):
    return tf.random.stateless_normal(list(shape), seed=tf.constant(seed, tf.int64),
                                      dtype=dtype).numpy()


@needs_tf
@pytest.mark.parametrize("shape", SHAPES)
def test_uniform_bit_identical_to_tensorflow(shape):
  for seed in SEEDS:
    for low, high in RANGES:
      for dtype in ("float32", "float64"):
        ours = host_random.stateless_uniform(shape, seed, low, high, dtype)
        theirs = tf_uniform(shape, seed, low, high, dtype)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        np.testing.assert_array_equal(ours.view(f"uint{ours.itemsize * 8}"),
                                      theirs.view(f"uint{theirs.itemsize * 8}"),
                                      err_msg=f"{shape} {seed} {low} {high} {dtype}")


@needs_tf
@pytest.mark.parametrize("shape", [(), (1,), (3,), (5,), (7, 3), (2, 3, 5), (300, 784),
                                   (3, 3, 64, 128)])
def test_normal_close_to_tensorflow(shape):
  for seed in SEEDS[:5]:
    for dtype, rtol, atol in (("float32", 1e-5, 1e-6), ("float64", 1e-12, 1e-13)):
      ours = host_random.stateless_normal(shape, seed, dtype)
      theirs = tf_normal(shape, seed, dtype)
      assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
      np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol)


@needs_tf
def test_random_mask_bit_identical_to_tensorflow():
  from keras_rigl import masks  # pylint: disable=g-import-not-at-top
  for shape in [(1,), (5,), (7, 3), (300, 784), (784, 300), (100, 10), (3, 3, 16, 32),
                (5000,)]:
    for sparsity in (0.0, 0.1, 0.5, 0.9, 0.99):
      for seed in [(0, 1), (3, 12345), (2**31 - 1, 7)]:
        ours = host_random.random_mask(shape, sparsity, seed)
        theirs = masks.random_mask(shape, sparsity, seed).numpy()
        np.testing.assert_array_equal(ours, theirs, err_msg=f"{shape} {sparsity} {seed}")


@needs_tf
def test_backend_host_random_is_tensorflows_op_on_tensorflow():
  np.testing.assert_array_equal(backend.host_random_uniform((5, 7), (1, 2)),
                                tf_uniform((5, 7), (1, 2)))
  np.testing.assert_array_equal(backend.host_random_normal((5, 7), (1, 2)),
                                tf_normal((5, 7), (1, 2)))


# Recorded from TensorFlow 2.21 (CPU): tf.random.stateless_uniform([6], seed=
# tf.constant((3, 1234567), tf.int64)) as uint32 bit patterns, and
# stateless_normal([5], same seed).
RECORDED_UNIFORM_BITS = [1064210284, 1062262856, 1053290188, 1046524944, 1064233404,
                         1059445508]
RECORDED_NORMAL = [-0.34399792551994324, 0.15091918408870697, 1.3461726903915405,
                   0.26173582673072815, -0.2977597415447235]


def test_recorded_tensorflow_values_on_every_backend():
  """The numbers TensorFlow gave, also where TensorFlow is not imported."""
  ours = host_random.stateless_uniform([6], (3, 1234567))
  np.testing.assert_array_equal(ours.view("uint32"), np.asarray(RECORDED_UNIFORM_BITS,
                                                                 np.uint32))
  np.testing.assert_allclose(host_random.stateless_normal([5], (3, 1234567)),
                             np.asarray(RECORDED_NORMAL, np.float32), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(backend.host_random_uniform([6], (3, 1234567)), ours)
