"""Plain Keras layers -> compressed layers (for `keras_rigl.sparsify(storage="compressed")`)."""

import numpy as np
from keras_rigl.backend import tf

from keras_rigl._keras import keras
from keras_rigl.layers.dense import SparseDense, SparsePointwiseConv2D
from keras_rigl.layers.embedding import SparseEmbedding
from keras_rigl.masks import name_seed, random_mask

_L = keras.layers


def _is_pointwise_conv(layer):
  if type(layer) is not _L.Conv2D:  # pylint: disable=unidiomatic-typecheck
    return False  # Not the transposed / separable / depthwise subclasses.
  return (tuple(layer.kernel_size) == (1, 1) and tuple(layer.strides) == (1, 1) and
          tuple(layer.dilation_rate) == (1, 1) and getattr(layer, "groups", 1) == 1 and
          layer.data_format == "channels_last")


def compressible(layer):
  """True if `layer` has a compressed counterpart (Dense, 1x1 Conv2D, Embedding).

  Example:
  >>> compressible(keras.layers.Dense(3)), compressible(keras.layers.Conv2D(3, 3))
  (True, False)
  """
  if getattr(layer, "kernel_constraint", None) is not None or \
      getattr(layer, "embeddings_constraint", None) is not None:
    return False  # Constraints act on the whole dense kernel: keep it masked.
  if type(layer) is _L.Dense or type(layer) is _L.Embedding:  # pylint: disable=unidiomatic-typecheck
    return True
  return _is_pointwise_conv(layer)


def to_compressed(layer, sparsity, seed, capacity=None):
  """An unbuilt compressed layer with `layer`'s configuration and name.

  `capacity`: as `keras_rigl.layers.SparseDense` (None: exactly nnz slots).

  Example:
  >>> type(to_compressed(keras.layers.Dense(3, name="d"), 0.5, seed=0)).__name__
  'SparseDense'
  """
  common = dict(sparsity=sparsity, seed=seed, name=layer.name, dtype=layer.dtype_policy,
                capacity=capacity)
  if isinstance(layer, _L.Embedding):
    return SparseEmbedding(layer.input_dim, layer.output_dim,
                           embeddings_initializer=layer.embeddings_initializer,
                           embeddings_regularizer=layer.embeddings_regularizer,
                           mask_zero=bool(layer.mask_zero), **common)
  kwargs = dict(activation=layer.activation, use_bias=layer.use_bias,
                kernel_initializer=layer.kernel_initializer,
                bias_initializer=layer.bias_initializer,
                kernel_regularizer=layer.kernel_regularizer,
                bias_regularizer=layer.bias_regularizer, **common)
  if isinstance(layer, _L.Dense):
    return SparseDense(layer.units, **kwargs)
  return SparsePointwiseConv2D(layer.filters, **kwargs)


def copy_weights(old, new, sparsity, seed):
  """Gives built `new` the positions SparseWrapper(old, sparsity, seed) would mask
  in, with `old`'s values there (and its bias).

  Uses the masked storage's own mask draw (an [N] array; `old` already holds
  the dense kernel, so this costs no more than the model being converted).

  Example:
  >>> old = keras.layers.Dense(4, name="d")
  >>> old.build((None, 6))
  >>> new = to_compressed(old, 0.5, seed=0)
  >>> new.build((None, 6))
  >>> copy_weights(old, new, 0.5, seed=0)
  >>> int(new.kernel_values.shape[0])
  12
  """
  weight = new.compressed_weights[0]
  kernel = old.embeddings if isinstance(old, _L.Embedding) else old.kernel
  mask = random_mask(tuple(kernel.shape), sparsity, name_seed(seed, f"{old.name}/{weight.key}"))
  positions = np.flatnonzero(np.asarray(mask).reshape(-1))
  values = np.asarray(kernel).reshape(-1)[positions]
  weight.assign(tf.constant(positions), tf.constant(values))
  if getattr(old, "bias", None) is not None and getattr(new, "bias", None) is not None:
    new.bias.assign(np.asarray(old.bias))
