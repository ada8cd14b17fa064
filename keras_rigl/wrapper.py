"""SparseWrapper: a Keras layer wrapper that keeps some weights sparse.

The wrapped layer keeps its own variables. The wrapper adds one non-trainable
0/1 mask per sparsifiable weight and, in ``call``, hands the layer ``W * M``
instead of ``W`` for the duration of the call. Because the gradient of
``W * M`` w.r.t. ``W`` is zero wherever the mask is zero, and the schedulers
zero the weight and its optimizer slots whenever a connection leaves the mask,
inactive weights stay exactly zero in the stored variables.

Custom layers take part through a one-method protocol::

    class MyLayer(keras.layers.Layer):
      def get_sparsifiable_weights(self):
        return [self.kernel]   # variables stored as attributes of the layer
"""

import contextlib
import inspect
import threading

import numpy as np
from keras_rigl.backend import tf

from keras_rigl import _keras
from keras_rigl import backend
from keras_rigl import layer_registry
from keras_rigl._keras import keras
from keras_rigl._records import recording
from keras_rigl.distributions import check_seed, check_sparsity
from keras_rigl.masks import name_seed

_L = keras.layers
# Layer types wrapped out of the box (the layer registry's plain types).
SUPPORTED_LAYERS = layer_registry.builtin_types()
MASK_INIT_CHOICES = ("random", "dense")

_capture = threading.local()
_substitutes = threading.local()


@contextlib.contextmanager
def capture_effective_weights():
  """Records every ``W * M`` tensor the wrappers build inside the block.

  Yields a list that fills with ``(wrapper, index, tensor)`` tuples; the
  scheduler takes the gradient of the loss w.r.t. these tensors (the dense
  gradient RigL grows from). Thread-local, so each replica of a
  MirroredStrategy records its own.
  """
  with recording(_capture) as records:
    yield records


@contextlib.contextmanager
def substitute_effective_weights(tensors):
  """Inside the block, wrappers compute with given tensors instead of ``W * M``.

  `tensors` maps ``(id(wrapper), index)`` to a tensor of that weight's shape.
  The backend seam (`keras_rigl.backend.training_loss_gradients`) takes
  the gradient of the loss with respect to these tensors on JAX and PyTorch:
  that is the dense gradient RigL grows from. Thread-local.
  """
  previous = getattr(_substitutes, "tensors", None)
  _substitutes.tensors = dict(tensors)
  try:
    yield
  finally:
    _substitutes.tensors = previous


@contextlib.contextmanager
def dense_weight_gradients():
  """Inside the block, the gradient of ``W * M`` w.r.t. ``W`` is dense (JAX/PyTorch).

  The wrappers compute ``W + stop_gradient(W * M - W)``: the same value as
  ``W * M`` (exactly: ``W + 0`` and ``W - W``), but the gradient with
  respect to ``W`` is the dense ``dL/d(W * M)``. The in-step RigL update on
  JAX (`keras_rigl.backend.jax_in_step`) traces its train step inside this
  block, takes its grow scores from that gradient and masks it before the
  optimizer applies it. Thread-local.
  """
  previous = getattr(_substitutes, "dense", False)
  _substitutes.dense = True
  try:
    yield
  finally:
    _substitutes.dense = previous


# Which weights a layer type masks, and their ER/ERK shapes, come from the
# layer registry (`keras_rigl.layer_registry`): these names are kept for the
# modules and tests that import them from here.
ATTENTION_PARTS = layer_registry.ATTENTION_PARTS
sparse_slots = layer_registry.sparse_slots
distribution_shapes = layer_registry.distribution_shapes
einsum_matrix_shape = layer_registry.einsum_matrix_shape
weight_short_name = layer_registry.short_name
is_composite = layer_registry.is_composite
is_sparsifiable = layer_registry.is_sparsifiable
sparsifiable_weights = layer_registry.sparsifiable_weights




def _build_attention(layer, query_shape):
  """Creates a MultiHeadAttention's projection kernels before its first call.

  We see the query's shape only, so an unbuilt layer is built for
  self-attention; for cross-attention build it (query and value shapes) first.
  """
  if _keras.IS_KERAS3:
    if not layer.built:
      layer.build(query_shape, query_shape)
    return
  # pylint: disable=protected-access
  # tf_keras creates the projections in _build_from_signature and builds them
  # lazily in the first call.
  if not getattr(layer, "_built_from_signature", False):
    layer._build_from_signature(query_shape, query_shape)
  shapes = {"_query_dense": layer._query_shape, "_key_dense": layer._key_shape,
            "_value_dense": layer._value_shape,
            "_output_dense": tf.TensorShape(layer._query_shape[:-1]).concatenate(
                [layer._num_heads, layer._value_dim])}
  for _, attr in ATTENTION_PARTS:
    sublayer = getattr(layer, attr)
    if not sublayer.built:
      with tf.init_scope():
        sublayer.build(shapes[attr])
  layer.built = True


def _attribute_holding(layer, variable):
  for attr, value in vars(layer).items():
    if value is variable:
      return attr
  raise ValueError(
      f"Layer {layer.name!r} does not keep weight {variable.name!r} as an "
      "attribute of its own (e.g. self.kernel = self.add_weight(...)). "
      "SparseWrapper substitutes W * M for that attribute during call; store "
      "each weight returned by get_sparsifiable_weights() on the layer itself.")


class _MaskedConstraint:
  """Applies the user's constraint, then the mask (runs after each step)."""

  def __init__(self, constraint, mask):
    self.constraint = constraint
    self.mask = mask

  def __call__(self, w):
    return self.constraint(w) * _keras.variable_tensor(self.mask)


@keras.utils.register_keras_serializable(package="keras_rigl")
class SparseWrapper(_L.Wrapper):
  """Makes the kernels of a Keras layer sparse with fixed-count 0/1 masks.

  Each sparsifiable weight ``W`` (kernels, embeddings; never biases or
  normalisation weights) gets a non-trainable mask ``M`` holding exactly
  ``floor(sparsity * W.size)`` zeros at random positions drawn from a stateless
  generator keyed by `seed` and the layer's name. The layer computes with
  ``W * M``. A `RigLScheduler` (or SET / magnitude pruning) callback moves
  the ones of the masks during training; without one the masks stay fixed
  (static sparse training).

  Args:
    layer: the layer to wrap: Dense, EinsumDense, Conv1D/2D/3D,
      Conv1D/2D/3DTranspose, DepthwiseConv1D/2D, SeparableConv1D/2D (both
      kernels), Embedding, SimpleRNN/LSTM/GRU ("kernel" and
      "recurrent_kernel", held by ``layer.cell``), Bidirectional of those
      ("forward_kernel", "forward_recurrent_kernel", "backward_kernel",
      "backward_recurrent_kernel"), TimeDistributed of a supported layer,
      MultiHeadAttention ("query_kernel", "key_kernel", "value_kernel",
      "output_kernel"; a MultiHeadAttention that is not built yet is built
      for self-attention, so build it first for cross-attention), or a custom
      layer with ``get_sparsifiable_weights()``. Biases are never masked.
    sparsity: fraction of zeros in [0, 1); a float for every weight or a dict
      {weight name ("kernel", "recurrent_kernel", ...): sparsity}.
    seed: integer seed of the mask positions.
    mask_init: "random" (default) or "dense" (all ones, for dense-to-sparse
      magnitude pruning).
    **kwargs: Keras layer arguments (e.g. name; default "sparse_<layer>").

  Example:
  >>> layer = SparseWrapper(keras.layers.Dense(10), sparsity=0.9)
  >>> y = layer(tf.ones([2, 20]))
  >>> round(layer.sparsity, 2)
  0.9
  >>> gru = SparseWrapper(keras.layers.GRU(8), sparsity=0.75)
  >>> y = gru(tf.ones([2, 5, 3]))
  >>> gru.weight_keys
  ['kernel', 'recurrent_kernel']
  """

  def __init__(self, layer, sparsity=0.9, seed=0, mask_init="random", **kwargs):
    if not isinstance(layer, _L.Layer):
      raise TypeError(f"SparseWrapper wraps a Keras layer instance, got {layer!r}; pass "
                      "e.g. SparseWrapper(keras.layers.Dense(64), sparsity=0.9).")
    if isinstance(layer, SparseWrapper):
      raise ValueError(
          f"layer {layer.name!r} is already a SparseWrapper; wrap the inner layer "
          "once (SparseWrapper(layer.layer, ...)) instead of wrapping a wrapper.")
    owner = getattr(layer, "_keras_rigl_wrapper", None)
    if owner is not None:
      raise ValueError(
          f"layer {layer.name!r} is already wrapped by SparseWrapper {owner!r}: two "
          "wrappers would hold two masks for one kernel. Wrap each layer once and "
          "reuse that wrapper wherever the layer is shared.")
    if not is_sparsifiable(layer):
      sparsifiable_weights(layer)  # Raises the explanatory error.
    if isinstance(sparsity, dict):
      sparsity = {k: check_sparsity(v, f"sparsity[{k!r}]") for k, v in sparsity.items()}
    else:
      sparsity = check_sparsity(sparsity)
    if mask_init not in MASK_INIT_CHOICES:
      raise ValueError(f"mask_init must be one of {MASK_INIT_CHOICES}, got {mask_init!r}.")
    kwargs.setdefault("name", f"sparse_{layer.name}")
    if "dtype" not in kwargs and getattr(layer, "dtype_policy", None) is not None:
      kwargs["dtype"] = layer.dtype_policy
    super().__init__(layer, **kwargs)
    self.target_sparsity = sparsity
    self.seed = check_seed(seed)
    object.__setattr__(layer, "_keras_rigl_wrapper", self.name)
    self.mask_init = mask_init
    # [(attribute, weight_key, weight, mask)]. A plain, untracked list: if Keras
    # tracked it, the inner layer's kernel would also count as the wrapper's
    # own weight (saved twice; tf_keras then fails to load a .keras file).
    object.__setattr__(self, "_specs", [])
    object.__setattr__(self, "_taps", None)  # GradientTaps, see enable_gradient_taps.
    parameters = inspect.signature(layer.call).parameters.values()
    # tf_keras passes `training` to us; forward only what the layer accepts.
    self._inner_kwargs = None if any(
        p.kind == p.VAR_KEYWORD for p in parameters) else {p.name for p in parameters}
    if getattr(layer, "supports_masking", False):
      self.supports_masking = True

  def _sparsity_for(self, key):
    if isinstance(self.target_sparsity, dict):
      if key not in self.target_sparsity:
        raise ValueError(
            f"sparsity for {self.layer.name!r} is a dict without an entry for "
            f"its weight {key!r}; give one of {sorted(self.target_sparsity)} "
            f"a value for {key!r}.")
      return self.target_sparsity[key]
    return self.target_sparsity

  def build(self, input_shape=None):
    if isinstance(self.layer, _L.MultiHeadAttention):
      _build_attention(self.layer, input_shape)
    elif not self.layer.built:
      self.layer.build(input_shape)
      self.layer.built = True
    slots = sparse_slots(self.layer)
    weights = [(key, variable) for key, _, variable in slots]
    if isinstance(self.target_sparsity, dict):
      unknown = sorted(set(self.target_sparsity) - {key for key, _ in weights})
      if unknown:
        raise ValueError(
            f"sparsity names {unknown}, but layer {self.layer.name!r} has the "
            f"sparsifiable weights {[key for key, _ in weights]}.")
    object.__setattr__(self, "_specs", [])
    for key, owner, weight in slots:
      attribute = _attribute_holding(owner, weight)
      sparsity = self._sparsity_for(key)
      seed = name_seed(self.seed, f"{self.layer.name}/{key}")
      if self.mask_init == "dense":
        initializer = "ones"
      else:
        def initializer(shape, dtype=None, sparsity=sparsity, seed=seed):
          # TensorFlow's stateless generator (its op on TensorFlow, the same
          # Philox stream in numpy elsewhere): the same seed, the same mask.
          return backend.host_random_mask(shape, sparsity, seed, dtype)
      # tf_keras' AutoCastVariable reports the compute dtype inside a call
      # (bfloat16/float16 under mixed precision); the mask takes the stored one.
      dtype = getattr(weight, "true_dtype", None) or weight.dtype
      mask = _keras.add_mask_weight(self, f"{key}_mask", tuple(weight.shape),
                                    dtype, initializer)
      user_constraint = getattr(weight, "constraint", None)
      if user_constraint is not None:
        # The optimizer applies it after each step: re-mask after the user's.
        _keras.set_variable_constraint(weight, _MaskedConstraint(user_constraint, mask))
      # An attribute, so that tf.train.Checkpoint saves it (Keras 3 tracks
      # checkpoint dependencies through attributes only).
      setattr(self, f"{key}_mask", mask)
      self._specs.append((owner, attribute, key, weight, mask))
    self.apply_masks()
    self.built = True

  def apply_masks(self):
    """Sets every masked weight to ``W * M`` (stored inactive weights = 0)."""
    for _, _, _, weight, mask in self._specs:
      weight.assign(_keras.variable_tensor(weight) * _keras.variable_tensor(mask))

  def enable_gradient_taps(self, momentum, step):
    """Per masked weight, a `GradientTap` that the training pass feeds.

    Called by schedulers that need the dense gradient at every step (SNFS,
    RigL with ``redistribution="momentum"``), in the strategy's scope. Returns
    ``(taps, created)``: the existing taps if they already use `momentum` and
    `step`, else new ones (`created` True: a train function traced before
    does not feed them and must be made again).
    """
    taps = self._taps
    if (taps is not None and all(t.momentum == float(momentum) and t.step is step
                                 for t in taps)):
      return taps, False
    # The tap belongs to the methods that read it (SNFS, RigL's momentum
    # redistribution): imported on first use, not when the wrapper loads.
    from keras_rigl.methods.gradient_tap import GradientTap  # pylint: disable=g-import-not-at-top
    taps = [GradientTap(tuple(weight.shape), momentum, step,
                        name=f"{self.name}_{key}")
            for key, weight in zip(self.weight_keys, [w for w, _ in self.masked_weights])]
    object.__setattr__(self, "_taps", taps)
    return taps, True

  def use_gradient_taps(self, taps):
    """Computes each masked weight's ``W * M`` through ``taps[i].product``.

    `taps` holds one object per masked weight with a ``product(weight, mask)``
    method (a `GradientTap`, or the in-step update's `StepGradientTap`), or is
    None to stop. A train function traced before must be made again.
    """
    if taps is not None and len(taps) != len(self._specs):
      raise ValueError(f"{self.name}: {len(taps)} gradient taps for "
                       f"{len(self._specs)} masked weights.")
    object.__setattr__(self, "_taps", None if taps is None else list(taps))

  @property
  def gradient_taps(self):
    """[GradientTap] per masked weight while a scheduler uses them, else None."""
    return self._taps

  def disable_gradient_taps(self):
    """Stops feeding gradient taps (after the train function is made again)."""
    object.__setattr__(self, "_taps", None)

  @property
  def masked_weights(self):
    """[(weight_variable, mask_variable), ...] for every sparse weight."""
    return [(weight, mask) for _, _, _, weight, mask in self._specs]

  @property
  def weight_keys(self):
    """Short names ("kernel", ...) of the masked weights, in order."""
    return [key for _, _, key, _, _ in self._specs]

  @property
  def sparsity(self):
    """Current fraction of zeros over all masks of this layer (a float)."""
    total = sum(int(np.prod(mask.shape)) for _, mask in self.masked_weights)
    ones = sum(float(np.sum(backend.to_numpy(mask), dtype=np.float64))
               for _, mask in self.masked_weights)
    return 1.0 - ones / total if total else 0.0

  def call(self, inputs, *args, **kwargs):
    if not backend.IS_TENSORFLOW:
      return self._call_other_backend(inputs, *args, **kwargs)
    records = getattr(_capture, "records", None)
    taps = self._taps
    originals = []
    compute_dtype = tf.as_dtype(self.layer.compute_dtype)
    try:
      # `owner` is the layer itself, or the sublayer holding the weight (an
      # RNN cell, an attention projection): the layer's own call reads it there.
      for index, (owner, attribute, _, weight, mask) in enumerate(self._specs):
        # Passes that record (RigL's gradient batch, SNIP) take gradients of
        # the effective weights themselves: they must not feed the taps.
        if taps is not None and records is None:
          effective = taps[index].product(_keras.variable_tensor(weight),
                                          _keras.variable_tensor(mask))
        else:
          effective = _keras.variable_tensor(weight) * _keras.variable_tensor(mask)
        if records is not None:
          records.append((self, index, effective))
        if effective.dtype != compute_dtype:
          effective = tf.cast(effective, compute_dtype)
        originals.append((owner, attribute, getattr(owner, attribute)))
        object.__setattr__(owner, attribute, effective)
      if self._inner_kwargs is not None:
        kwargs = {k: v for k, v in kwargs.items() if k in self._inner_kwargs}
      return self.layer.call(inputs, *args, **kwargs)
    finally:
      for owner, attribute, original in originals:
        object.__setattr__(owner, attribute, original)

  def _call_other_backend(self, inputs, *args, **kwargs):
    """`call` on JAX / PyTorch: ``W * M`` in keras.ops (no gradient taps)."""
    ops = keras.ops
    substitutes = getattr(_substitutes, "tensors", None) or {}
    dense = getattr(_substitutes, "dense", False)
    originals = []
    compute_dtype = self.layer.compute_dtype
    try:
      for index, (owner, attribute, _, weight, mask) in enumerate(self._specs):
        effective = substitutes.get((id(self), index))
        if effective is None:
          w, m = _keras.variable_tensor(weight), _keras.variable_tensor(mask)
          effective = ops.multiply(w, m)
          if dense:
            effective = ops.add(w, ops.stop_gradient(ops.subtract(effective, w)))
        if ops.dtype(effective) != compute_dtype:
          effective = ops.cast(effective, compute_dtype)
        originals.append((owner, attribute, getattr(owner, attribute)))
        object.__setattr__(owner, attribute, effective)
      if self._inner_kwargs is not None:
        kwargs = {k: v for k, v in kwargs.items() if k in self._inner_kwargs}
      return self.layer.call(inputs, *args, **kwargs)
    finally:
      for owner, attribute, original in originals:
        object.__setattr__(owner, attribute, original)

  def compute_output_shape(self, input_shape, *args, **kwargs):
    if isinstance(self.layer, _L.MultiHeadAttention) and not args:
      args = (kwargs.pop("value_shape", input_shape),)  # Only the query's seen.
    return self.layer.compute_output_shape(input_shape, *args, **kwargs)

  def compute_mask(self, inputs, mask=None):
    return self.layer.compute_mask(inputs, mask)

  def get_build_config(self):
    config = super().get_build_config()
    if (config is not None and _keras.IS_KERAS3 and
        isinstance(self.layer, _L.MultiHeadAttention)):
      # Our input shape is the query's only: keep the value/key shapes too.
      config = dict(config, layer_build_config=self.layer.get_build_config())
    return config

  def build_from_config(self, config):
    config = dict(config)
    inner = config.pop("layer_build_config", None)
    if inner and not self.layer.built:
      self.layer.build_from_config(inner)
    super().build_from_config(config)

  def get_config(self):
    config = super().get_config()
    config.update({"sparsity": self.target_sparsity, "seed": self.seed,
                   "mask_init": self.mask_init})
    return config
