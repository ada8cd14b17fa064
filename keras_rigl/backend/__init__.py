"""The backend seam: every place where keras_rigl depends on the Keras backend.

Keras 3 runs on TensorFlow, JAX and PyTorch (``KERAS_BACKEND``); tf_keras is
TensorFlow. keras_rigl's masked storage (`SparseWrapper`, `sparsify`,
`strip`, reports, FLOPs, ER/ERK) and its host-scheduled mask updates
(`RigLScheduler(data, ...)`, `SETScheduler`, `MagnitudePruningScheduler`)
run on every backend; the rest is TensorFlow-only and says so through
`require_tensorflow`, one error that names the backend and the alternative.

What differs between backends lives here and nowhere else:

- `NAME`, `IS_TENSORFLOW`: the backend in use.
- `require_tensorflow(feature, alternative)`: the error of a TF-only feature.
- `tf`: TensorFlow, imported on first attribute access (every module uses it
  instead of ``import tensorflow``), so that Keras 3 on JAX or PyTorch runs
  without importing TensorFlow.
- `to_numpy`, `host_random_uniform` / `host_random_normal` /
  `host_random_mask` (TensorFlow's stateless generator: its own op on
  TensorFlow, `keras_rigl.host_random`'s numpy Philox elsewhere, so that masks
  and random growth are identical on every backend), `strategy_scope`.
- `sync_state` / `state_changed`: a callback that reads or assigns variables
  during `fit` (JAX keeps the training state outside the variables between
  steps; the other backends need nothing).
- `training_loss_gradients`, `loss_gradients`: the dense gradient of a loss with
  respect to the effective weights ``W * M`` on one batch (RigL's grow scores
  from separate data): a ``tf.GradientTape`` on TensorFlow (in
  `keras_rigl.methods.rigl`), ``jax.grad`` over a stateless call on JAX,
  ``torch.autograd.grad`` on PyTorch.

Example:
>>> NAME in ("tensorflow", "jax", "torch")
True
>>> require_tensorflow("nothing", "anything") if IS_TENSORFLOW else None
"""

import contextlib

import numpy as np

from keras_rigl import _keras
from keras_rigl import host_random
from keras_rigl._keras import keras
from keras_rigl.backend._tf import tf  # TensorFlow, imported on first use.
from keras_rigl.backend._tf import tf_types

NAME = _keras.BACKEND
IS_TENSORFLOW = NAME == "tensorflow"
# Backends with the masked storage and the host-scheduled schedulers.
SUPPORTED = ("tensorflow", "jax", "torch")


class TensorFlowOnlyError(NotImplementedError):
  """A keras_rigl feature that needs the TensorFlow backend was used on another."""


def require_tensorflow(feature, alternative):
  """Raises `TensorFlowOnlyError` unless Keras runs on TensorFlow.

  Args:
    feature: what was asked for, e.g. "keras_rigl.export (SavedModel/TFLite)".
    alternative: what to do instead on this backend (one sentence).

  Example:
  >>> issubclass(TensorFlowOnlyError, NotImplementedError)
  True
  >>> require_tensorflow("kr.export", "Use model.export.") if IS_TENSORFLOW else None
  """
  if IS_TENSORFLOW:
    return
  raise TensorFlowOnlyError(
      f"{feature} needs the TensorFlow backend of Keras, but keras_rigl runs on "
      f"KERAS_BACKEND={NAME!r}. {alternative} (Start Python with "
      "KERAS_BACKEND=tensorflow to use it; see docs/backends.md.)")


def to_numpy(value):
  """A numpy array from a tensor or Keras variable of any backend."""
  if isinstance(value, np.ndarray):
    return value
  if IS_TENSORFLOW:
    return np.asarray(_keras.variable_tensor(value)
                      if hasattr(value, "assign") else value)
  return keras.ops.convert_to_numpy(value)


def host_random_uniform(shape, seed):
  """TensorFlow's ``stateless_uniform(shape, seed)`` (float32) as numpy.

  The same numbers on every backend, so that SET's random growth (and
  everything else keyed by a stateless seed) is bit-identical across
  backends: TensorFlow's own op on TensorFlow, `keras_rigl.host_random` (the
  same Philox stream in numpy, no TensorFlow needed) elsewhere. `seed` is a
  pair of ints.

  Example:
  >>> host_random_uniform((2, 2), (0, 1)).dtype.name
  'float32'
  """
  return host_random_uniform_range(shape, seed, 0.0, 1.0)


def host_random_normal(shape, seed, dtype="float32"):
  """TensorFlow's ``stateless_normal(shape, seed)`` as numpy.

  On JAX / PyTorch `keras_rigl.host_random.stateless_normal`: the same
  Box-Muller draw, equal to TensorFlow's to a few units in the last place
  (numpy's log/sin/cos), not bit for bit. Used for random `grow_init` only.
  """
  if not IS_TENSORFLOW:
    return host_random.stateless_normal(shape, seed, _host_dtype(dtype))
  with tf.device("/CPU:0"):
    return tf.random.stateless_normal(
        [int(d) for d in shape], seed=tf.constant(seed, tf.int64),
        dtype=tf.as_dtype(dtype)).numpy()


def host_random_uniform_range(shape, seed, low, high, dtype="float32"):
  """TensorFlow's ``stateless_uniform(shape, seed, low, high)`` as numpy (bit for bit)."""
  if not IS_TENSORFLOW:
    return host_random.stateless_uniform(shape, seed, low, high, _host_dtype(dtype))
  with tf.device("/CPU:0"):
    return tf.random.stateless_uniform(
        [int(d) for d in shape], seed=tf.constant(seed, tf.int64), minval=low,
        maxval=high, dtype=tf.as_dtype(dtype)).numpy()


def _host_dtype(dtype):
  """float32 / float64 for `host_random`; other float dtypes draw float32 then cast."""
  name = keras.backend.standardize_dtype(dtype)
  return name if name in ("float32", "float64") else "float32"


def host_random_mask(shape, sparsity, seed, dtype="float32"):
  """`keras_rigl.masks.random_mask` (``floor(sparsity * N)`` zeros at stateless
  random positions): a tf.Tensor on TensorFlow, elsewhere the identical mask
  from `keras_rigl.host_random` in numpy.

  Example:
  >>> int(np.asarray(host_random_mask((4, 5), 0.5, (0, 1))).sum())
  10
  """
  if not IS_TENSORFLOW:
    name = keras.backend.standardize_dtype(dtype or "float32")
    return host_random.random_mask(shape, sparsity, seed, name)
  from keras_rigl.masks import random_mask  # pylint: disable=g-import-not-at-top
  return random_mask(shape, sparsity, seed, dtype=tf.as_dtype(dtype or tf.float32))


def strategy_scope(model):
  """The model's tf.distribute strategy scope (TensorFlow), else a no-op."""
  if IS_TENSORFLOW:
    return model.distribute_strategy.scope()
  return contextlib.nullcontext()


def distribute_strategy(model):
  """The model's tf.distribute strategy, or None on JAX / PyTorch."""
  if IS_TENSORFLOW:
    return model.distribute_strategy
  return None


def sync_state(model):
  """Puts the training state back into the model's variables (JAX, in fit).

  Keras's JAX trainer keeps variables outside the model between train steps;
  a callback that reads them (the step counter, weights, masks) calls this
  first. Elsewhere a no-op.
  """
  if NAME == "jax" and hasattr(model, "jax_state_sync"):
    model.jax_state_sync()


def state_changed(model):
  """Tells the trainer that a callback assigned variables (JAX: re-read them)."""
  if NAME == "jax":
    model._jax_state_synced = True  # pylint: disable=protected-access


def _unpack(batch):
  x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
  convert = lambda t: None if t is None else keras.tree.map_structure(
      lambda v: keras.ops.convert_to_tensor(np.asarray(v)), t)
  return convert(x), convert(y), convert(sample_weight)


def _effective_gradients(model, keys, forward_loss, substitute):
  """``d forward_loss / d(W * M)`` for the masked weights `keys`, as numpy.

  `keys` are ``(wrapper, index)`` pairs; `forward_loss(stateless)` runs the
  model and returns a scalar loss. On JAX it gets ``(trainable,
  non_trainable, metrics, optimizer)`` value lists and must call the model
  statelessly; on PyTorch it gets None and calls the model (the state it
  moves is put back here).
  """
  effective = [keras.ops.multiply(*[_keras.variable_tensor(v) for v in
                                    wrapper.masked_weights[index]])
               for wrapper, index in keys]
  ids = [(id(wrapper), index) for wrapper, index in keys]
  if NAME == "jax":
    import jax  # pylint: disable=g-import-not-at-top
    values = ([v.value for v in model.trainable_variables],
              [v.value for v in model.non_trainable_variables],
              [v.value for v in model.metrics_variables],
              [v.value for v in model.optimizer.variables]
              if getattr(model, "optimizer", None) is not None else [])

    def loss_of(tensors):
      with substitute(dict(zip(ids, tensors))):
        return forward_loss(values)

    grads = jax.grad(loss_of)(effective)
    return [np.asarray(g, np.float32) for g in grads]
  if NAME == "torch":
    import torch  # pylint: disable=g-import-not-at-top
    state = [(v, keras.ops.copy(v.value)) for v in
             list(model.non_trainable_variables) + list(model.metrics_variables)]
    leaves = [e.detach().clone().requires_grad_(True) for e in effective]
    try:
      with substitute(dict(zip(ids, leaves))):
        loss = forward_loss(None)
      grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    finally:
      for variable, value in state:
        variable.assign(value)
    return [np.zeros(tuple(e.shape), np.float32) if g is None
            else g.detach().cpu().numpy().astype(np.float32)
            for e, g in zip(effective, grads)]
  raise ValueError(f"no gradient rule for backend {NAME!r} here: TensorFlow takes "
                   "its gradients with tf.GradientTape where they are needed.")


def training_loss_gradients(model, batch, keys, substitute):
  """Dense ``dL/d(W * M)`` of the training loss on one batch (JAX and PyTorch).

  RigL's grow scores from separate data. The loss is the one the train step
  minimises (compiled loss plus regularisation, training mode, scaled by a
  LossScaleOptimizer); the model's other state (normalisation statistics, RNG
  seeds, metrics) is left as it was. `substitute` is
  `keras_rigl.wrapper.substitute_effective_weights`: the wrappers compute
  with stand-ins for ``W * M``, so the gradient is dense (the gradient of
  ``W * M`` with respect to ``W`` is zero where the mask is).
  """
  x, y, sample_weight = _unpack(batch)
  if NAME == "jax":
    def forward_loss(values):
      trainable, non_trainable, metrics, optimizer = values
      loss, _ = model.compute_loss_and_updates(
          trainable, non_trainable, metrics, x, y, sample_weight, training=True,
          optimizer_variables=optimizer)
      return loss
  else:
    def forward_loss(_):
      y_pred = model(x, training=True)
      loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                training=True)
      return _keras.scale_loss_for_gradients(model.optimizer, loss)
  return _effective_gradients(model, keys, forward_loss, substitute)


def loss_gradients(model, x, loss_of_prediction, keys, substitute):
  """Dense ``d loss_of_prediction(model(x)) / d(W * M)`` (JAX and PyTorch; SNIP)."""
  x = keras.tree.map_structure(lambda v: keras.ops.convert_to_tensor(np.asarray(v)), x)
  if NAME == "jax":
    def forward_loss(values):
      trainable, non_trainable, _, _ = values
      y_pred, _ = model.stateless_call(trainable, non_trainable, x, training=True)
      return loss_of_prediction(y_pred)
  else:
    def forward_loss(_):
      return loss_of_prediction(model(x, training=True))
  return _effective_gradients(model, keys, forward_loss, substitute)
