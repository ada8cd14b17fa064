"""Redistribution statistics of compressed weights, in O(nnz) memory.

Layer-wise redistribution (`keras_rigl.redistribution`) moves counts between
layers by one statistic per layer, the mean over its active weights of

* ``|dL/dW|`` (``redistribution="gradient"``): for a compressed weight the
  dense gradient is ``a^T d`` (its inputs and output gradients, see
  `keras_rigl.layers.update.rigl_grow`); only its value at the stored
  positions is needed, ``sum_m a[m, i] d[m, j]`` per entry, which
  `kernels.sampled_matmul` computes in chunks (an embedding: its output
  gradients summed per distinct id, then gathered);
* ``|momentum|`` (``redistribution="momentum"``): the moving average of the
  gradient of the stored values, which a `GradientTap` on ``values * live``
  keeps (one float per slot).

Both are `keras_rigl.redistribution.mean_abs_over_active` of the masked
storage, taken over the live slots. Plain TensorFlow; nothing here knows
about Keras.
"""

from keras_rigl.backend import tf

from keras_rigl.layers import kernels


def gradient_at(a, d, indices, n_cols):
  """``(a^T d)[p]`` at every flat position ``p`` of `indices`, float32 ``[len]``.

  Args:
    a: float inputs ``[M, n_rows]``, or int ids ``[M]`` (an embedding: a
      one-hot row of the kernel per example).
    d: the loss gradient w.r.t. the pre-activation output, ``[M, n_cols]``.
    indices: int flat positions ``i * n_cols + j`` (static length: chunks of
      ``[chunk, M]`` gathers, never ``[len, M]`` at once).
    n_cols: the kernel's columns (Python int).

  Example:
  >>> a, d = tf.constant([[1., 2.], [0., 1.]]), tf.constant([[3., 1.], [1., 0.]])
  >>> gradient_at(a, d, tf.constant([0, 3]), 2).numpy().tolist()  # (a^T d) = [[3, 1], [7, 2]]
  [3.0, 2.0]
  >>> gradient_at(tf.constant([1, 1, 0]), tf.constant([[1.], [2.], [5.]]), tf.constant([1]),
  ...             1).numpy().tolist()
  [3.0]
  """
  indices = tf.convert_to_tensor(indices)
  rows = indices // n_cols
  cols = indices % n_cols
  a = tf.convert_to_tensor(a)
  d = tf.cast(d, tf.float32)
  if not a.dtype.is_integer:
    return kernels.sampled_matmul(tf.cast(a, tf.float32), d, rows, cols)
  # Ids: the gradient of row i is the sum of d over the examples with id i.
  ids, where = tf.unique(tf.cast(tf.reshape(a, [-1]), tf.int64))
  n_ids = tf.shape(ids)[0]
  per_id = tf.math.unsorted_segment_sum(d, where, n_ids)  # [distinct ids, n_cols]
  order = tf.argsort(ids)
  # One zero row and a sentinel id (-1, never a row) for positions whose row
  # is not among the ids: the searches stay in range.
  sorted_ids = tf.concat([tf.gather(ids, order), [-1]], 0)
  per_id = tf.concat([per_id, tf.zeros([1, tf.shape(d)[1]], tf.float32)], 0)
  rows = tf.cast(rows, tf.int64)
  at = tf.searchsorted(sorted_ids[:-1], rows, side="left", out_type=tf.int32)
  found = tf.equal(tf.gather(sorted_ids, at), rows)
  row = tf.where(found, tf.gather(tf.concat([order, [n_ids]], 0), at), n_ids)
  return tf.gather_nd(per_id, tf.stack([row, tf.cast(cols, tf.int32)], axis=1))


def mean_abs_live(values, live):
  """Mean of ``|values|`` over the live slots (float64; 0 if none).

  The masked storage's `keras_rigl.redistribution.mean_abs_over_active`,
  with the live flag as the mask.

  Example:
  >>> float(mean_abs_live(tf.constant([1., -3., 7.]), tf.constant([True, True, False])))
  2.0
  """
  from keras_rigl import redistribution as _redistribution  # pylint: disable=g-import-not-at-top
  return _redistribution.mean_abs_over_active(values, tf.cast(live, tf.float32))
