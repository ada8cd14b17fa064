"""Which Keras this package runs on, and the few places the two flavours differ.

TensorFlow 2.21 routes ``tf.keras`` to Keras 3 unless ``TF_USE_LEGACY_KERAS``
is ``1``/``true``/``True``, in which case it uses ``tf_keras`` (Keras 2). We
apply exactly the same rule so that ``tf.keras`` and ``keras_rigl`` always
agree. Every other module imports Keras from here, never directly.
"""

import os

import tensorflow as tf

USE_LEGACY_KERAS = os.environ.get("TF_USE_LEGACY_KERAS", None) in ("true", "True", "1")

if USE_LEGACY_KERAS:
  import tf_keras as keras  # pylint: disable=g-import-not-at-top
  IS_KERAS3 = False
else:
  import keras  # pylint: disable=g-import-not-at-top
  IS_KERAS3 = True
  if keras.backend.backend() != "tensorflow":
    raise ImportError(
        "keras_rigl needs the TensorFlow backend of Keras 3, but KERAS_BACKEND="
        f"{keras.backend.backend()!r}. Unset KERAS_BACKEND or set it to "
        "'tensorflow'.")

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
  """The current value of a Keras (3 or 2) variable as a tf.Tensor."""
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
