"""SparseDense and SparsePointwiseConv2D: ``x @ W`` with W stored as values + positions."""

import numpy as np
from keras_rigl.backend import tf

from keras_rigl._keras import keras
from keras_rigl.layers import kernels
from keras_rigl.layers.base import CompressedLayer, _record, serialize


def _matmul(x, values, indices, n_in, n_out):
  """``x @ W`` for x [B, n_in] and W given by flat positions ``i * n_out + j``.

  The one call site of the sparse kernel: `kernels.sparse_matmul` with the
  method its measured rule picks for this shape, batch and XLA context, except
  ``"dense"``: forward and backward never build a tensor of W's dense size.
  Positions are ascending (the layers keep them so): nothing is sorted per call.
  """
  method = kernels.choose_method(
      n_in, n_out, int(indices.shape[0]), x.shape[0], xla=kernels.in_xla_context(),
      ordered=True, allow_dense=False)
  return kernels.sparse_matmul(x, values, indices, n_in, n_out, method=method,
                               indices_sorted=True)


class _SparseMatmulLayer(CompressedLayer):
  """Shared by SparseDense and SparsePointwiseConv2D (both are x @ W + b)."""

  def __init__(self, units, sparsity=0.9, activation=None, use_bias=True,
               kernel_initializer="glorot_uniform", bias_initializer="zeros",
               kernel_regularizer=None, bias_regularizer=None, seed=0,
               block_size=None, **kwargs):
    super().__init__(sparsity=sparsity, seed=seed, block_size=block_size, **kwargs)
    if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
      raise ValueError(f"{type(self).__name__} needs a positive integer number of "
                       f"output units, got {units!r}.")
    self.units = int(units)
    self.activation = keras.activations.get(activation)
    self.use_bias = bool(use_bias)
    self.kernel_initializer = keras.initializers.get(kernel_initializer)
    self.bias_initializer = keras.initializers.get(bias_initializer)
    self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
    self.bias_regularizer = keras.regularizers.get(bias_regularizer)
    self.bias = None

  def _kernel_shape(self, n_in):
    return (n_in, self.units)

  def build(self, input_shape):
    input_shape = tuple(input_shape)
    n_in = input_shape[-1]
    if n_in is None:
      raise ValueError(f"{type(self).__name__} {self.name!r} needs a known last input "
                       f"dimension, got input shape {input_shape}.")
    n_in = int(n_in)
    self._add_compressed(self._kernel_shape(n_in), n_in, self.units,
                         self.kernel_initializer, self.kernel_regularizer)
    if self.use_bias:
      self.bias = self.add_weight(name="bias", shape=(self.units,),
                                  initializer=self.bias_initializer,
                                  regularizer=self.bias_regularizer, trainable=True)
    self.built = True

  def call(self, inputs):
    x = tf.cast(inputs, self.compute_dtype)
    n_in = self._compressed.n_rows
    flat = tf.reshape(x, [-1, n_in])
    y = _matmul(flat, self._values(), self._indices(), n_in, self.units)
    _record(self, flat, y)
    if self.use_bias:
      y = y + tf.cast(self.bias, y.dtype)
    if self.activation is not None:
      y = self.activation(y)
    return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [self.units]], 0))

  def compute_output_shape(self, input_shape):
    return tuple(input_shape)[:-1] + (self.units,)

  def get_config(self):
    config = super().get_config()
    config.update({
        "activation": serialize(self.activation, "activations"),
        "use_bias": self.use_bias,
        "kernel_initializer": serialize(self.kernel_initializer, "initializers"),
        "bias_initializer": serialize(self.bias_initializer, "initializers"),
        "kernel_regularizer": serialize(self.kernel_regularizer, "regularizers"),
        "bias_regularizer": serialize(self.bias_regularizer, "regularizers"),
    })
    return config


@keras.utils.register_keras_serializable(package="keras_rigl")
class SparseDense(_SparseMatmulLayer):
  """A Dense layer whose kernel stores only its active entries.

  The kernel ``[n_in, units]`` exists only as ``kernel_values`` (trainable,
  ``[nnz]``) and ``kernel_indices`` (non-trainable int32 flat positions ``i *
  units + j``; int64 past 2**31 entries), with ``nnz = N - floor(sparsity *
  N)``, the count the masked storage keeps. Nothing of the dense size is ever
  allocated: positions are drawn in O(nnz) memory (stateless, keyed by `seed`
  and the layer name), values from `kernel_initializer` with the dense
  kernel's fans, and the forward/backward pass is a sparse matmul. Optimizer
  slots are O(nnz) because the variable is. `RigLScheduler` and
  `SETScheduler` move its connections like those of a `SparseWrapper`.

  Args:
    units: output size.
    sparsity: fraction of the dense kernel's entries that are zero, [0, 1).
    activation, use_bias, kernel_initializer, bias_initializer,
      kernel_regularizer (applied to the values), bias_regularizer: as
      `keras.layers.Dense`.
    seed: seed of the initial positions.
    block_size: bound on the dense-gradient scores one RigL growth block
      holds (elements); default 2**21.
    capacity: None (default: exactly nnz slots, the live count is fixed) or a
      factor >= 1.0: ``ceil(capacity * nnz)`` slots (at most the dense size),
      of which the first ``kernel_count`` are live, so that
      ``RigLScheduler(data, redistribution=...)`` can move the layer's count
      up to its slots (`keras_rigl.layers.capacity`). Costs the headroom in
      values, positions and optimizer slots (1.25: 25% more bytes).

  Example:
  >>> import keras_rigl as kr
  >>> import tensorflow as tf
  >>> layer = kr.layers.SparseDense(64, sparsity=0.9)
  >>> y = layer(tf.ones((2, 100)))
  >>> tuple(y.shape), tuple(layer.kernel_values.shape), round(layer.sparsity, 3)
  ((2, 64), (640,), 0.9)

  With room for redistribution to add 25% to its count:
  >>> roomy = kr.layers.SparseDense(64, sparsity=0.9, capacity=1.25)
  >>> _ = roomy(tf.ones((2, 100)))
  >>> tuple(roomy.kernel_values.shape), int(roomy.kernel_count), round(roomy.sparsity, 3)
  ((800,), 640, 0.9)
  """

  compressed_kind = "dense"

  def dense_layer(self):
    return keras.layers.Dense(
        self.units, activation=self.activation, use_bias=self.use_bias,
        kernel_initializer=self.kernel_initializer, bias_initializer=self.bias_initializer,
        kernel_regularizer=self.kernel_regularizer, bias_regularizer=self.bias_regularizer,
        name=self.name, dtype=self.dtype_policy)

  def get_config(self):
    config = super().get_config()
    config["units"] = self.units
    return config


@keras.utils.register_keras_serializable(package="keras_rigl")
class SparsePointwiseConv2D(_SparseMatmulLayer):
  """A 1x1 Conv2D (stride 1, channels_last) with a compressed kernel.

  Where MobileNets keep most of their weights. Storage, initialisation and
  updates as `SparseDense`; the kernel reads as shape ``(1, 1, c_in,
  filters)`` in reports and when stripped to a plain Conv2D.

  Args:
    filters: output channels.
    sparsity, activation, use_bias, kernel_initializer, bias_initializer,
      kernel_regularizer, bias_regularizer, seed, block_size, capacity: as
      `SparseDense`.

  Example:
  >>> import keras_rigl as kr
  >>> import tensorflow as tf
  >>> conv = kr.layers.SparsePointwiseConv2D(32, sparsity=0.75)
  >>> tuple(conv(tf.ones((1, 8, 8, 16))).shape)
  (1, 8, 8, 32)
  """

  compressed_kind = "conv"

  def __init__(self, filters, sparsity=0.9, **kwargs):
    allowed = {"kernel_size": 1, "strides": 1, "dilation_rate": 1,
               "data_format": "channels_last", "groups": 1}
    for name, fine in allowed.items():
      value = kwargs.pop(name, fine)
      if isinstance(value, (list, tuple)) and len(set(value)) == 1:
        value = value[0]
      if value is not None and value != fine:
        raise ValueError(
            f"SparsePointwiseConv2D supports {name}={fine!r} only, got {value!r}. "
            "Keep other convolutions masked (keras_rigl.SparseWrapper).")
    kwargs.pop("padding", None)  # Irrelevant for a 1x1 kernel with stride 1.
    super().__init__(filters, sparsity=sparsity, **kwargs)

  def dense_layer(self):
    return keras.layers.Conv2D(
        self.units, 1, activation=self.activation, use_bias=self.use_bias,
        kernel_initializer=self.kernel_initializer, bias_initializer=self.bias_initializer,
        kernel_regularizer=self.kernel_regularizer, bias_regularizer=self.bias_regularizer,
        name=self.name, dtype=self.dtype_policy)

  @property
  def filters(self):
    return self.units

  def _kernel_shape(self, n_in):
    return (1, 1, n_in, self.units)

  def build(self, input_shape):
    if len(tuple(input_shape)) != 4:
      raise ValueError(f"SparsePointwiseConv2D expects 4-D inputs (batch, height, width, "
                       f"channels), got shape {tuple(input_shape)}.")
    super().build(input_shape)

  def get_config(self):
    config = super().get_config()
    config["filters"] = self.units
    return config
