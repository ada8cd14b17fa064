"""Bad inputs to keras_rigl.layers.kernels.sparse_matmul."""

import tensorflow as tf

from keras_rigl.layers import kernels
from tests.bad_inputs import BadInput


def _call(**overrides):
  args = dict(x=tf.zeros([2, 4]), values=tf.ones([3]), indices=tf.constant([0, 5, 9]), n_in=4,
              n_out=3)
  args.update(overrides)
  return lambda: kernels.sparse_matmul(**args)


ROWS = [
    BadInput("sparse_matmul/unknown_method", _call(method="fast"), ValueError,
             ("method", "auto"), "method= names no implementation"),
    BadInput("sparse_matmul/x_width", _call(x=tf.zeros([2, 5])), ValueError,
             ("x", "n_in=4"), "x's last dimension differs from n_in"),
    BadInput("sparse_matmul/dtype_mismatch", _call(values=tf.ones([3], tf.float64)), TypeError,
             ("values", "same dtype", "cast"), "values and x have different float dtypes"),
    BadInput("sparse_matmul/nnz_mismatch", _call(values=tf.ones([2])), ValueError,
             ("values", "indices"), "values and indices have different lengths"),
    BadInput("sparse_matmul/int32_huge",
             _call(x=tf.zeros([1, 65536]), values=tf.ones([1]), indices=tf.constant([0]),
                   n_in=65536, n_out=65536), TypeError, ("indices", "int64"),
             "int32 indices for a kernel with 2**31 or more positions"),
    BadInput("sparse_matmul/dense_too_large",
             _call(x=tf.zeros([1, 4096]), values=tf.ones([1]), indices=tf.constant([0]),
                   n_in=4096, n_out=4096, method="dense"), ValueError,
             ("dense", "DENSE_LIMIT", "auto"), "method='dense' for a kernel too large to scatter"),
    BadInput("sparse_matmul/csr_under_xla",
             lambda: tf.function(_call(method="csr"), jit_compile=True)(), ValueError,
             ("csr", "jit_compile", "auto"), "a method without an XLA kernel under jit_compile"),
]
