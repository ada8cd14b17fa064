"""Which Keras this package runs on, and the few places the two flavours differ.

TensorFlow 2.21 routes ``tf.keras`` to Keras 3 unless ``TF_USE_LEGACY_KERAS``
is ``1``/``true``/``True``, in which case it uses ``tf_keras`` (Keras 2). We
apply exactly the same rule so that ``tf.keras`` and ``keras_rigl`` always
agree. Every other module imports Keras from here, never directly. Deciding
needs only the environment: TensorFlow is imported by tf_keras or by Keras 3's
TensorFlow backend, never here (Keras 3 on JAX or PyTorch runs without it).
"""

import os
import sys
import warnings

# TensorFlow on first use: Keras 3 on JAX or PyTorch must not import it.
from keras_rigl.backend._tf import tf

_LEGACY_VALUES = ("true", "True", "1")
USE_LEGACY_KERAS = os.environ.get("TF_USE_LEGACY_KERAS", None) in _LEGACY_VALUES


def _initial_environment():
  """The environment this process started with (Linux), or None if unknown."""
  try:
    with open("/proc/self/environ", "rb") as f:
      entries = f.read().split(b"\0")
  except OSError:
    return None
  return dict(e.decode("utf-8", "replace").split("=", 1) for e in entries if b"=" in e)


def legacy_keras_set_by_tfmot():
  """True if TF_USE_LEGACY_KERAS was set by importing tensorflow_model_optimization.

  tfmot sets ``TF_USE_LEGACY_KERAS=1`` when it is imported. When the process
  did not start with that variable, tfmot is loaded and the variable is now
  set, keras_rigl (like tf.keras) runs on tf_keras although the user may be
  writing Keras 3 code.
  """
  if not USE_LEGACY_KERAS or "tensorflow_model_optimization" not in sys.modules:
    return False
  initial = _initial_environment()
  return initial is not None and initial.get("TF_USE_LEGACY_KERAS") not in _LEGACY_VALUES


if legacy_keras_set_by_tfmot():
  warnings.warn(
      "keras_rigl runs on tf_keras (Keras 2), because tensorflow_model_optimization "
      "was imported first and set TF_USE_LEGACY_KERAS=1. Models built with Keras 3 "
      "(`import keras`) will not work with it. To use Keras 3, import keras_rigl "
      "before tensorflow_model_optimization (tfmot itself needs tf_keras); to use "
      "tf_keras on purpose and silence this, start Python with TF_USE_LEGACY_KERAS=1.",
      UserWarning, stacklevel=2)

if USE_LEGACY_KERAS:
  import tf_keras as keras  # pylint: disable=g-import-not-at-top
  IS_KERAS3 = False
else:
  import keras  # pylint: disable=g-import-not-at-top
  IS_KERAS3 = True

# The Keras backend ("tensorflow", "jax" or "torch"); tf_keras is TensorFlow.
# keras_rigl.backend holds everything that depends on it.
BACKEND = keras.backend.backend() if IS_KERAS3 else "tensorflow"

FLAVOUR = "tf_keras" if USE_LEGACY_KERAS else "keras3"


def unwrap_optimizer(optimizer):
  """Returns [optimizer, inner, ...] through any LossScaleOptimizer layers."""
  chain = [optimizer]
  while True:
    inner = getattr(chain[-1], "inner_optimizer", None)
    if inner is None or inner is chain[-1]:
      return chain
    chain.append(inner)


def is_legacy_optimizer(optimizer):
  """True for tf_keras.optimizers.legacy.* (slots via get_slot)."""
  return hasattr(optimizer, "get_slot_names") and hasattr(optimizer, "get_slot")


def optimizer_variable_index(optimizer, variable):
  """Index of `variable` in the optimizer's per-variable slot lists, or None."""
  if IS_KERAS3:
    if not getattr(optimizer, "built", False):
      return None
    try:
      return optimizer._get_variable_index(variable)  # pylint: disable=protected-access
    except KeyError:
      return None
  index = getattr(optimizer, "_index_dict", None)
  if not index:
    return None
  return index.get(optimizer._var_key(variable))  # pylint: disable=protected-access


def optimizer_variable_count(optimizer):
  """How many trainable variables the optimizer tracks (length of slot lists)."""
  if IS_KERAS3:
    return len(getattr(optimizer, "_trainable_variables", []))
  return len(getattr(optimizer, "_index_dict", {}) or {})


def set_variable_constraint(variable, constraint):
  """Sets the constraint the optimizer applies after each update."""
  if IS_KERAS3:
    variable.constraint = constraint
  else:
    # tf.Variable exposes `constraint` read-only; tf_keras optimizers read it.
    variable._constraint = constraint  # pylint: disable=protected-access


def add_mask_weight(layer, name, shape, dtype, initializer):
  """A non-trainable mask variable that is identical on every replica."""
  if IS_KERAS3:
    return layer.add_weight(
        name=name, shape=shape, dtype=dtype, initializer=initializer,
        trainable=False, aggregation="only_first_replica")
  return layer.add_weight(
      name=name, shape=shape, dtype=dtype, initializer=initializer,
      trainable=False,
      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


def variable_tensor(variable):
  """The current value of a Keras (3 or 2) variable as a backend tensor.

  A tf.Tensor on TensorFlow, a jax.Array / torch.Tensor on the other
  Keras 3 backends.
  """
  if IS_KERAS3 and isinstance(variable, keras.Variable):
    return variable.value
  return tf.convert_to_tensor(variable)


def is_graph_model(model):
  """True for Sequential and Functional models (the ones we can clone)."""
  if isinstance(model, keras.Sequential):
    return True
  if IS_KERAS3:
    from keras.src.models.functional import Functional  # pylint: disable=g-import-not-at-top
    return isinstance(model, Functional)
  return bool(getattr(model, "_is_graph_network", False))


_NOT_SLOT_LISTS = ("_variables", "_trainable_variables", "_all_variables",
                   "_non_trainable_variables", "_tracked_variables")


def optimizer_slots(optimizer, variable):
  """Every optimizer variable that shadows `variable` element by element.

  Momentum, Adam/RMSprop/Adagrad moments, EMA averages and gradient
  accumulators: for Keras 3 and tf_keras optimizers (lists indexed like the
  trainable variables), legacy tf_keras optimizers (get_slot), through any
  LossScaleOptimizer. Only optimizer variables of the same shape are returned.
  """
  shape = tuple(variable.shape)
  slots = []
  for opt in unwrap_optimizer(optimizer):
    if is_legacy_optimizer(opt):
      for name in opt.get_slot_names():
        try:
          slots.append(opt.get_slot(variable, name))
        except (KeyError, ValueError):
          pass
      continue
    index = optimizer_variable_index(opt, variable)
    if index is None:
      continue
    count = optimizer_variable_count(opt)
    for attr, value in vars(opt).items():
      if attr in _NOT_SLOT_LISTS or not isinstance(value, (list, tuple)):
        continue
      if len(value) != count:
        continue
      slot = value[index]
      if slot is None or slot is variable or not hasattr(slot, "assign"):
        continue
      if tuple(getattr(slot, "shape", ())) == shape:
        slots.append(slot)
  unique = []
  for slot in slots:
    if all(slot is not other for other in unique):
      unique.append(slot)
  return unique


def scale_loss_for_gradients(optimizer, loss):
  """Applies the optimizer's loss scale (mixed precision) if it has one."""
  if IS_KERAS3:
    return optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss
  if hasattr(optimizer, "get_scaled_loss"):
    return optimizer.get_scaled_loss(loss)
  return loss


def build_optimizer(optimizer, variables):
  """Creates the optimizer's slots for `variables` now if it has none yet.

  Keras 3 and tf_keras optimizers create their slots on the first step; the
  schedulers build them before tracing their update (call inside the model's
  strategy scope) so that the update is traced once. Returns False for
  optimizers whose slots can only appear with the first step (tf_keras
  legacy optimizers).
  """
  for opt in unwrap_optimizer(optimizer):
    if is_legacy_optimizer(opt):
      return False
  if IS_KERAS3:
    if not optimizer.built:
      optimizer.build(variables)
    return True
  inner = unwrap_optimizer(optimizer)[-1]  # A LossScaleOptimizer delegates.
  if not getattr(inner, "_built", False):
    with tf.init_scope():
      inner.build(variables)
  return True


def metric_variables(model):
  """Variables of the model's metrics, including tf_keras's loss mean before the first step.

  tf_keras lists its compiled loss metric in `model.metrics` only once the
  first train step has built it; the variable itself exists from compile.
  """
  variables = [v for m in model.metrics for v in m.variables]
  loss_mean = getattr(getattr(model, "compiled_loss", None), "_total_loss_mean", None)
  if not IS_KERAS3 and loss_mean is not None:
    variables += list(loss_mean.variables)
  unique = {}
  for v in variables:
    unique.setdefault(id(v), v)
  return list(unique.values())


def steps_per_execution(model):
  """How many train steps one on_train_batch_end covers."""
  if IS_KERAS3:
    return int(getattr(model, "steps_per_execution", 1) or 1)
  value = getattr(model, "_steps_per_execution", None)
  return int(value.numpy()) if value is not None else 1


def unpack_batch(data):
  """(x, y, sample_weight) from a batch of (x,), (x, y) or (x, y, w)."""
  return keras.utils.unpack_x_y_sample_weight(data)


def jit_compile(model):
  """True if the model's train step is compiled with XLA."""
  value = getattr(model, "jit_compile", None) if IS_KERAS3 else getattr(
      model, "_jit_compile", None)
  return bool(value) and value != "auto"


def create_legacy_slots(optimizer, variables):
  """Creates a legacy tf_keras optimizer's slots now (they appear at step 1)."""
  for opt in unwrap_optimizer(optimizer):
    if is_legacy_optimizer(opt):
      with tf.init_scope():
        opt._create_all_weights(variables)  # pylint: disable=protected-access


def remake_train_function(model):
  """Traces the model's train function again (both flavours read the attribute)."""
  function = model.make_train_function(force=True)
  if function is not None:
    model.train_function = function
