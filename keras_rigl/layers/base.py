"""What every compressed layer shares: storage, initialisation, the scheduler interface.

A compressed weight is two variables: ``<key>_values`` (trainable, float,
[nnz]) and ``<key>_indices`` (non-trainable int32/int64 flat row-major
positions into the dense ``[n_rows, n_cols]`` kernel, [nnz], kept in
ascending order so that no kernel call and no update sorts them). The
schedulers see it through `CompressedWeight` (current positions and values,
`assign` a new set) and through `capture_layer_io`, which records each
layer's inputs and pre-activation outputs during RigL's extra forward pass.

A layer built with ``capacity=`` (`keras_rigl.layers.capacity`) holds
``[capacity]`` slots and a non-trainable ``<key>_count``: the first `count`
slots are its live entries, the rest hold the sentinel position and value 0,
and the forward pass multiplies the values by the live flag, so dead slots get
no gradient and stay exactly zero. Redistribution moves that count.
"""

import contextlib
import threading

import numpy as np
from keras_rigl.backend import tf

from keras_rigl import _keras
from keras_rigl import backend as _backend
from keras_rigl._keras import keras
from keras_rigl._records import recording
from keras_rigl.distributions import check_sparsity
from keras_rigl.layers import capacity as _capacity
from keras_rigl.layers.positions import active_count, index_dtype, initial_positions
from keras_rigl.masks import name_seed

_capture = threading.local()


@contextlib.contextmanager
def capture_layer_io():
  """Records ``(layer, inputs, outputs)`` of every compressed layer call in the block.

  `inputs` is the layer input flattened to ``[M, n_rows]`` (ids ``[M]`` for
  an embedding) and `outputs` the pre-activation ``[M, n_cols]`` tensor; the
  gradient of the loss w.r.t. `outputs` gives ``dL/dW = inputs^T grad``
  without a dense tensor. Thread-local, so each replica records its own.

  Example:
  >>> from keras_rigl.layers import SparseDense
  >>> layer = SparseDense(4, sparsity=0.5)
  >>> with capture_layer_io() as records:
  ...   _ = layer(tf.ones([2, 3]))
  >>> [tuple(t.shape) for t in records[0][1:]]
  [(2, 3), (2, 4)]
  """
  with recording(_capture) as records:
    yield records


def _record(layer, inputs, outputs):
  records = getattr(_capture, "records", None)
  if records is not None:
    records.append((layer, inputs, outputs))


class CompressedWeight:
  """One compressed kernel: the scheduler-facing interface.

  Attributes:
    layer: the owning layer; key: "kernel" / "embeddings".
    values, indices: the variables.
    count_variable: the live count (int scalar variable) of a layer built
      with ``capacity=``, else None (every slot is live).
    shape: the dense kernel's shape as the equivalent Keras layer has it
      (e.g. (1, 1, c_in, c_out) for a pointwise convolution).
    n_rows, n_cols: the 2-D view the positions index (``i * n_cols + j``).

  Example:
  >>> from keras_rigl.layers import SparseDense
  >>> layer = SparseDense(4, sparsity=0.75)
  >>> layer.build((None, 8))
  >>> weight = layer.compressed_weights[0]
  >>> weight.shape, weight.nnz, weight.dense().shape
  ((8, 4), 8, (8, 4))
  """

  def __init__(self, layer, key, values, indices, shape, n_rows, n_cols, count=None):
    self.layer = layer
    self.key = key
    self.values = values
    self.indices = indices
    self.count_variable = count
    self.shape = tuple(int(d) for d in shape)
    self.n_rows = int(n_rows)
    self.n_cols = int(n_cols)

  @property
  def name(self):
    return f"{self.layer.name}/{self.key}"

  @property
  def size(self):
    return self.n_rows * self.n_cols

  @property
  def capacity(self):
    """Stored slots (the length of `values`): nnz unless built with capacity."""
    return int(self.values.shape[0])

  @property
  def has_capacity(self):
    """True if the live count can move (the layer was built with ``capacity=``)."""
    return self.count_variable is not None

  @property
  def nnz(self):
    """Live entries now (a Python int; reads the count variable eagerly)."""
    if self.count_variable is None:
      return self.capacity
    return int(np.asarray(_keras.variable_tensor(self.count_variable)))

  def count(self):
    """Live entries as an int tensor (the positions' dtype), usable in graphs."""
    if self.count_variable is None:
      return tf.constant(self.capacity, self.indices.dtype)
    return tf.cast(_keras.variable_tensor(self.count_variable), self.indices.dtype)

  def live(self):
    """bool [capacity]: True at the live slots (a prefix of the slots)."""
    return _capacity.live_mask(self.count(), self.capacity)

  @property
  def density(self):
    return self.nnz / self.size if self.size else 1.0

  def positions(self):
    """Current flat positions (int tensor [capacity]: with capacity, the live
    ones first, then dead slots at the sentinel position)."""
    return _keras.variable_tensor(self.indices)

  def current_values(self):
    return _keras.variable_tensor(self.values)

  def assign(self, positions, values):
    """Replaces the whole set of connections (positions distinct, any order).

    Stored in ascending position order (values follow their positions), as
    the kernels and the update expect. Without capacity there must be
    exactly `capacity` of them; with capacity at most that many (the live
    count becomes their number, the other slots dead).
    """
    positions = tf.cast(positions, self.indices.dtype)
    order = tf.argsort(positions, stable=True)
    positions = tf.gather(positions, order)
    values = tf.gather(tf.cast(values, self.values.dtype), order)
    if self.count_variable is not None:
      count = int(positions.shape[0])
      if count > self.capacity:
        raise ValueError(f"{self.name}: {count} connections do not fit its capacity of "
                         f"{self.capacity} slots.")
      positions, values = _capacity.pad(positions, values, self.capacity, self.size)
      self.count_variable.assign(tf.constant(count, self.count_variable.dtype))
    self.indices.assign(positions)
    self.values.assign(values)

  def sort(self):
    """Puts stored entries in ascending position order (e.g. after loading
    positions saved in another order, such as an older checkpoint)."""
    count = self.nnz
    self.assign(self.positions()[:count], self.current_values()[:count])

  def dense(self):
    """The dense kernel as a numpy array of `shape` (live entries; small kernels only)."""
    count = self.nnz
    flat = np.zeros([self.size], np.asarray(self.values).dtype)
    flat[np.asarray(self.indices)[:count].astype(np.int64)] = np.asarray(self.values)[:count]
    return flat.reshape(self.shape)


def _variance_scaling_for(initializer, n_rows, n_cols, nnz):
  """An initializer that gives [nnz] values the dense kernel's distribution.

  Keras computes fans from the shape it is given; for a 1-D [nnz] shape both
  fans are nnz. Variance-scaling initializers are rescaled so that they use
  the dense fans (fan_in = n_rows, fan_out = n_cols); element-wise ones
  (RandomNormal, RandomUniform, zeros...) are used as they are.
  """
  initializer = keras.initializers.get(initializer)
  if isinstance(initializer, keras.initializers.VarianceScaling):
    fan = {"fan_in": n_rows, "fan_out": n_cols,
           "fan_avg": (n_rows + n_cols) / 2.0}[initializer.mode]
    return keras.initializers.VarianceScaling(
        scale=initializer.scale * nnz / fan, mode=initializer.mode,
        distribution=initializer.distribution, seed=getattr(initializer, "seed", None))
  name = type(initializer).__name__
  if name in ("Orthogonal", "OrthogonalInitializer", "Identity", "IdentityInitializer"):
    raise ValueError(
        f"kernel_initializer {name} is not element-wise, so it cannot be drawn "
        "for the active entries alone. Use a variance-scaling initializer "
        "(glorot_uniform, he_normal, ...) or a random one (random_normal, ...).")
  return initializer


class CompressedLayer(keras.layers.Layer):
  """Base of the compressed layers: one compressed kernel, optional bias.

  Subclasses call `_add_compressed` in `build` and compute with `_values()`
  and `_indices()`; schedulers, `sparsify`, `strip`, `sparsity_report` and
  `count_flops` then handle them (see `SparseDense`).

  Example:
  >>> from keras_rigl.layers import SparseDense
  >>> isinstance(SparseDense(3), CompressedLayer)
  True
  """

  compressed_kind = None  # "dense", "conv" or "embedding" (for count_flops).
  kernel_key = "kernel"

  def __init__(self, sparsity=0.9, seed=0, block_size=None, capacity=None, **kwargs):
    _backend.require_tensorflow(
        f"Compressed storage ({type(self).__name__}, sparsify(storage='compressed'))",
        "Use the masked storage: keras_rigl.sparsify(model, ...) with "
        "storage='masked' (the default) or keras_rigl.SparseWrapper.")
    super().__init__(**kwargs)
    self.target_sparsity = check_sparsity(sparsity)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
      raise TypeError(f"seed must be an integer, got {seed!r}.")
    self.seed = int(seed)
    if block_size is not None and (
        isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer))
        or block_size < 1):
      raise ValueError(f"block_size must be a positive integer (elements of one block "
                       f"of gradient scores) or None, got {block_size!r}.")
    self.block_size = None if block_size is None else int(block_size)
    self.capacity = _capacity.check_capacity(capacity, type(self).__name__)
    self._compressed = None
    self._tap = None  # A GradientTap on the values (momentum redistribution).

  def _add_compressed(self, shape, n_rows, n_cols, initializer, regularizer=None):
    size = n_rows * n_cols
    nnz = active_count(size, self.target_sparsity)
    slots = _capacity.slot_count(nnz, size, self.capacity)
    key = self.kernel_key
    seed = name_seed(self.seed, f"{self.name}/{key}")
    dtype = index_dtype(size)

    def positions(shape, dtype=None):  # pylint: disable=unused-argument
      live = initial_positions(size, nnz, seed)
      return tf.constant(_capacity.pad_numpy(live, slots, size), dtype or index_dtype(size))

    value_init = _variance_scaling_for(initializer, n_rows, n_cols, slots)
    if slots > nnz:
      value_init = _capacity.dead_slots_zero(value_init, nnz)
    values = self.add_weight(
        name=f"{key}_values", shape=(slots,), initializer=value_init,
        regularizer=regularizer, trainable=True)
    indices = _keras.add_mask_weight(self, f"{key}_indices", (slots,), dtype, positions)
    setattr(self, f"{key}_values", values)
    setattr(self, f"{key}_indices", indices)
    count = None
    if self.capacity is not None:
      count = _keras.add_mask_weight(
          self, f"{key}_count", (), dtype,
          lambda shape, dtype=None: tf.constant(nnz, dtype or index_dtype(size)))
      setattr(self, f"{key}_count", count)
    object.__setattr__(self, "_compressed",
                       CompressedWeight(self, key, values, indices, shape, n_rows, n_cols,
                                        count))

  @property
  def compressed_weights(self):
    """[CompressedWeight] of this layer (the scheduler-facing interface)."""
    return [self._compressed] if self._compressed is not None else []

  @property
  def sparsity(self):
    """Fraction of the dense kernel's entries that are not stored."""
    return 1.0 - self._compressed.density if self._compressed is not None else None

  def _values(self):
    weight = self._compressed
    values = weight.current_values()
    if weight.has_capacity:
      # Dead slots: zero in the forward pass and no gradient, as masked weights.
      live = tf.cast(weight.live(), values.dtype)
      recording_pass = getattr(_capture, "records", None) is not None
      if self._tap is not None and not recording_pass:
        values = self._tap.product(values, live)  # Feeds momentum redistribution.
      else:
        values = values * live
    return tf.cast(values, self.compute_dtype)

  def enable_gradient_tap(self, momentum, step):
    """A `GradientTap` on the live values that the training pass feeds.

    For RigL's ``redistribution="momentum"`` (a layer built with capacity):
    the moving average of ``dL/d(values * live)``, the dense gradient at the
    stored positions. Returns ``(tap, created)`` as
    `SparseWrapper.enable_gradient_taps`.
    """
    tap = self._tap
    if tap is not None and tap.momentum == float(momentum) and tap.step is step:
      return tap, False
    from keras_rigl.methods.gradient_tap import GradientTap  # pylint: disable=g-import-not-at-top
    tap = GradientTap((self._compressed.capacity,), momentum, step,
                      name=f"{self.name}_{self.kernel_key}")
    object.__setattr__(self, "_tap", tap)
    return tap, True

  @property
  def gradient_tap(self):
    """The values' `GradientTap` while a scheduler uses one, else None."""
    return self._tap

  def _indices(self):
    return self._compressed.positions()

  def dense_layer(self):
    """An unbuilt plain Keras layer computing the same function (for strip)."""
    raise NotImplementedError

  def dense_weights(self):
    """Weights for `dense_layer()` (numpy; the kernel is dense: small layers only)."""
    weights = [self._compressed.dense()]
    if getattr(self, "bias", None) is not None:
      weights.append(np.asarray(self.bias))
    return weights

  def get_config(self):
    config = super().get_config()
    config.update({"sparsity": self.target_sparsity, "seed": self.seed,
                   "block_size": self.block_size, "capacity": self.capacity})
    return config


def serialize(obj, kind):
  return getattr(keras, kind).serialize(obj) if obj is not None else None
