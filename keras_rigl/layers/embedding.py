"""SparseEmbedding: an embedding table stored as values + positions."""

import numpy as np
from keras_rigl.backend import tf

from keras_rigl._keras import keras
from keras_rigl.layers.base import CompressedLayer, _record, serialize


def _lookup(ids, values, indices, output_dim):
  """Rows `ids` [M] of the table given by flat positions ``id * output_dim + j``.

  Positions are ascending (compressed layers keep them so): each id's run
  is found with a binary search and its entries scattered: O(M log nnz +
  M * output_dim), never the table, no sort.
  """
  ordered = tf.convert_to_tensor(indices)  # int32 unless the table has >= 2**31 entries.
  ids = tf.cast(ids, ordered.dtype)
  start = tf.cast(tf.searchsorted(ordered, ids * output_dim, side="left"), tf.int64)
  end = tf.cast(tf.searchsorted(ordered, (ids + 1) * output_dim, side="left"), tf.int64)
  runs = tf.ragged.range(start, end)
  where = runs.flat_values
  example = runs.value_rowids()
  column = tf.cast(tf.gather(ordered, where) % output_dim, tf.int64)
  entries = tf.gather(values, where)
  return tf.scatter_nd(tf.stack([example, column], axis=1), entries,
                       tf.stack([tf.size(ids, out_type=tf.int64),
                                 tf.constant(output_dim, tf.int64)]))


@keras.utils.register_keras_serializable(package="keras_rigl")
class SparseEmbedding(CompressedLayer):
  """An Embedding whose table stores only its active entries.

  Storage, initialisation and RigL/SET updates as `SparseDense`: the table
  ``[input_dim, output_dim]`` is ``embeddings_values`` + ``embeddings_indices``.
  RigL's growth gradient is non-zero only on the rows of the ids in the batch;
  it is accumulated one block of rows at a time.

  Args:
    input_dim: vocabulary size; output_dim: embedding size.
    sparsity: fraction of the table's entries that are zero, [0, 1).
    embeddings_initializer: element-wise initializer (default uniform +-0.05,
      like Keras).
    embeddings_regularizer: applied to the values.
    mask_zero: as `keras.layers.Embedding`.
    seed, block_size, capacity: as `SparseDense` (with capacity the live
      count is ``embeddings_count``).

  Example:
  >>> import keras_rigl as kr
  >>> import tensorflow as tf
  >>> emb = kr.layers.SparseEmbedding(1000, 16, sparsity=0.95)
  >>> tuple(emb(tf.constant([[1, 2, 3]])).shape), tuple(emb.embeddings_values.shape)
  ((1, 3, 16), (800,))
  >>> roomy = kr.layers.SparseEmbedding(1000, 16, sparsity=0.95, capacity=1.5)
  >>> roomy.build()
  >>> tuple(roomy.embeddings_values.shape), int(roomy.embeddings_count)
  ((1200,), 800)
  """

  compressed_kind = "embedding"
  kernel_key = "embeddings"

  def __init__(self, input_dim, output_dim, sparsity=0.9,
               embeddings_initializer="uniform", embeddings_regularizer=None,
               mask_zero=False, seed=0, block_size=None, **kwargs):
    kwargs.pop("input_length", None)
    super().__init__(sparsity=sparsity, seed=seed, block_size=block_size, **kwargs)
    for name, value in (("input_dim", input_dim), ("output_dim", output_dim)):
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"SparseEmbedding {name} must be a positive integer, got {value!r}.")
    self.input_dim = int(input_dim)
    self.output_dim = int(output_dim)
    self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
    self.embeddings_regularizer = keras.regularizers.get(embeddings_regularizer)
    self.mask_zero = bool(mask_zero)
    self.supports_masking = self.mask_zero

  def build(self, input_shape=None):
    shape = (self.input_dim, self.output_dim)
    self._add_compressed(shape, self.input_dim, self.output_dim,
                         self.embeddings_initializer, self.embeddings_regularizer)
    self.built = True

  def call(self, inputs):
    ids = tf.cast(inputs, tf.int64)
    flat = tf.reshape(ids, [-1])
    out = _lookup(flat, self._values(), self._indices(), self.output_dim)
    _record(self, flat, out)
    return tf.reshape(out, tf.concat([tf.shape(ids), [self.output_dim]], 0))

  def dense_layer(self):
    return keras.layers.Embedding(
        self.input_dim, self.output_dim, embeddings_initializer=self.embeddings_initializer,
        embeddings_regularizer=self.embeddings_regularizer, mask_zero=self.mask_zero,
        name=self.name, dtype=self.dtype_policy)

  def compute_mask(self, inputs, mask=None):
    if not self.mask_zero:
      return None
    return tf.not_equal(inputs, 0)

  def compute_output_shape(self, input_shape):
    return tuple(input_shape) + (self.output_dim,)

  def get_config(self):
    config = super().get_config()
    config.update({
        "input_dim": self.input_dim, "output_dim": self.output_dim,
        "embeddings_initializer": serialize(self.embeddings_initializer, "initializers"),
        "embeddings_regularizer": serialize(self.embeddings_regularizer, "regularizers"),
        "mask_zero": self.mask_zero})
    return config
