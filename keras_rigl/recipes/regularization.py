"""Weight decay (and width) put into a copy of a Functional model.

The authors add ``l2_regularizer(wd)`` = ``wd * sum(w^2) / 2`` of every
kernel to the loss; Keras' ``L2(l)`` adds ``l * sum(w^2)``, so `rebuild`
attaches ``L2(wd / 2)``. The same copy can scale every layer's width (the
small-dense baseline).

Example:
>>> import keras_rigl as kr
>>> from keras_rigl.recipes.regularization import rebuild
>>> model = rebuild(kr.models.lenet300_100(), weight_decay=1e-4)
>>> round(float(model.get_layer("fc1").kernel_regularizer.l2), 10)
5e-05
"""

import numbers

from keras_rigl._keras import keras


def _depthwise_types():
  return tuple(getattr(keras.layers, n) for n in ("DepthwiseConv1D", "DepthwiseConv2D")
               if hasattr(keras.layers, n))


def _output_layer_names(model):
  return {t._keras_history[0].name for t in model.outputs}  # pylint: disable=protected-access


def rebuild(model, width=1.0, weight_decay=0.0, decay_depthwise=True):
  """A copy of a Functional model with narrower layers and/or weight decay.

  `width` scales the units/filters of every Dense and Conv layer except the
  output layer (depthwise convs follow their input). `weight_decay` puts
  ``L2(weight_decay / 2)`` on every kernel (``depthwise_regularizer`` on
  depthwise convs unless `decay_depthwise` is False): the authors'
  ``l2_regularizer(wd)`` = ``wd * sum(w^2) / 2``. Weights are freshly
  initialised.

  Example:
  >>> import keras_rigl as kr
  >>> narrow = rebuild(kr.models.lenet300_100(), width=0.5)
  >>> narrow.get_layer("fc1").units, narrow.get_layer("fc2").units
  (150, 50)
  """
  if not isinstance(model, keras.Model):
    raise TypeError(f"rebuild needs a Functional or Sequential keras Model, got "
                    f"{type(model).__name__}; e.g. rebuild(kr.models.lenet5(), width=0.5).")
  for name, value, low in (("width", width, "> 0"), ("weight_decay", weight_decay, ">= 0")):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
        value > 0 if low == "> 0" else value >= 0):
      raise ValueError(f"rebuild {name} must be a number {low}, got {value!r}.")
  if width == 1.0 and not weight_decay:
    return model
  outputs = _output_layer_names(model)
  regularizer = keras.regularizers.L2(weight_decay / 2.0) if weight_decay else None
  depthwise_types = _depthwise_types()

  def clone(layer):
    config = layer.get_config()
    depthwise = isinstance(layer, depthwise_types)
    if width != 1.0 and layer.name not in outputs and not depthwise:
      for key in ("units", "filters"):
        if config.get(key):
          config[key] = max(1, int(round(config[key] * width)))
    if regularizer is not None:
      if depthwise:
        if decay_depthwise:
          config["depthwise_regularizer"] = regularizer
      elif "kernel_regularizer" in config and not isinstance(layer, keras.layers.Embedding):
        config["kernel_regularizer"] = regularizer
    return layer.__class__.from_config(config)

  return keras.models.clone_model(model, clone_function=clone)
