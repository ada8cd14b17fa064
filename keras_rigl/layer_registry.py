"""The layer registry: which Keras layer types can be sparse, and how.

A `LayerType` says, for one kind of layer, which of its weights get masks
(and which (sub)layer holds each), and how `keras_rigl.count_flops` counts
it. ER/ERK shapes follow from the weights (`distribution_shapes`). The
wrapper, `sparsify`, the FLOPs accounting and `sparsity_for_flops` all read
this one table; no other module lists layer types.

Built in: Dense, EinsumDense, Conv1D/2D/3D and their transposes,
DepthwiseConv1D/2D, SeparableConv1D/2D, Embedding, SimpleRNN/LSTM/GRU,
Bidirectional of those, TimeDistributed of a plain type, MultiHeadAttention,
and any layer with ``get_sparsifiable_weights()``. A type of your own is one
`register` call (types registered later are looked up first):

>>> from keras_rigl._keras import keras
>>> class Scale(keras.layers.Layer):
...   def build(self, input_shape):
...     self.scale = self.add_weight(name="scale", shape=(input_shape[-1],))
...   def call(self, x):
...     return x * self.scale
>>> _ = register(LayerType(
...     "scale", lambda layer: isinstance(layer, Scale),
...     lambda layer: [("scale", layer, getattr(layer, "scale", None))]))
>>> layer = Scale()
>>> layer.build((None, 4))
>>> distribution_shapes(layer), flops_kind(layer)
({'scale': (4,)}, None)
>>> unregister("scale")
"""

import dataclasses
from typing import Callable, Optional

from keras_rigl._keras import keras

_L = keras.layers


def keras_types(*names):
  """The classes of `keras.layers` with these names that this Keras has.

  >>> keras_types("Dense", "NoSuchLayer") == (keras.layers.Dense,)
  True
  """
  return tuple(getattr(_L, name) for name in names if hasattr(_L, name))


def _is_a(types):
  return lambda layer: bool(types) and isinstance(layer, types)


@dataclasses.dataclass(frozen=True)
class LayerType:
  """One kind of layer as the wrapper, `sparsify` and the FLOPs see it.

  Args:
    name: a unique name ("dense", "rnn", ...).
    matches: ``layer -> bool``: whether a layer is of this kind.
    weights: ``layer -> [(key, owner, variable)]``: the weights to mask, in
      order. `key` names the weight ("kernel", "recurrent_kernel", ...);
      `owner` is the (sub)layer that stores it as an attribute (the wrapper
      substitutes ``W * M`` there); `variable` is None while unbuilt.
    flops: how `count_flops` counts the layer ("dense", "conv", "rnn",
      "attention", ...), or None: not counted.
    composite: True when the weights live on sublayers (an RNN's cell,
      attention projections); TimeDistributed wraps non-composite types only.
    types: the Keras classes of a built-in type (for error messages).

  Example:
  >>> find(keras.layers.Dense(3)).name, find(keras.layers.LSTM(3)).flops
  ('dense', 'rnn')
  """
  name: str
  matches: Callable
  weights: Callable
  flops: Optional[str] = None
  composite: bool = False
  types: tuple = ()


def _attributes(*names):
  """Weights found by attribute (the first of `names` a layer has, per entry)."""
  def weights(layer):
    found = []
    for choice in names:
      choice = (choice,) if isinstance(choice, str) else choice
      attr = next((a for a in choice if getattr(layer, a, None) is not None), choice[0])
      variable = getattr(layer, attr, None)
      key = attr if variable is None else short_name(variable)
      found.append((key, layer, variable))
    return found
  return weights


def short_name(variable):
  """'kernel' for 'dense/kernel:0' (tf_keras) or 'kernel' (Keras 3).

  >>> short_name(keras.Variable(1.0, name="kernel") if hasattr(keras, "Variable")
  ...            else keras.backend.variable(1.0, name="dense/kernel"))
  'kernel'
  """
  return variable.name.split("/")[-1].split(":")[0]


def _plain(name, flops, class_names, *attributes):
  types = keras_types(*class_names)
  return LayerType(name, _is_a(types), _attributes(*(attributes or ("kernel",))),
                   flops=flops, types=types)


_RNN_CELLS = keras_types("SimpleRNNCell", "LSTMCell", "GRUCell")
# MultiHeadAttention's projections: (part, attribute of the EinsumDense).
ATTENTION_PARTS = (("query", "_query_dense"), ("key", "_key_dense"),
                   ("value", "_value_dense"), ("output", "_output_dense"))


def _is_rnn(layer):
  return isinstance(layer, _L.RNN) and isinstance(getattr(layer, "cell", None), _RNN_CELLS)


def _rnn_weights(layer):
  cell = layer.cell
  return [("kernel", cell, getattr(cell, "kernel", None)),
          ("recurrent_kernel", cell, getattr(cell, "recurrent_kernel", None))]


def _bidirectional_weights(layer):
  return [(f"{side}_{key}", owner, variable)
          for side, inner in (("forward", layer.forward_layer),
                              ("backward", layer.backward_layer))
          for key, owner, variable in _rnn_weights(inner)]


def _attention_weights(layer):
  parts = [(part, getattr(layer, attr, None)) for part, attr in ATTENTION_PARTS]
  return [(f"{part}_kernel", sub, getattr(sub, "kernel", None) if sub is not None else None)
          for part, sub in parts]


def _is_plain_inside(layer):
  kind = find(layer)
  return kind is not None and not kind.composite


def _protocol_weights(layer):
  return [(short_name(v), layer, v) for v in layer.get_sparsifiable_weights()]


# Looked up in order, the first match wins. Order matters among the plain
# types: in tf_keras Conv2DTranspose, SeparableConv2D and DepthwiseConv2D
# subclass the plain convolutions.
_BUILTIN = (
    LayerType("rnn", _is_rnn, _rnn_weights, flops="rnn", composite=True,
              types=keras_types("SimpleRNN", "LSTM", "GRU")),
    LayerType("bidirectional",
              lambda layer: isinstance(layer, _L.Bidirectional) and _is_rnn(layer.forward_layer),
              _bidirectional_weights, flops="bidirectional", composite=True,
              types=keras_types("Bidirectional")),
    LayerType("time_distributed",
              lambda layer: isinstance(layer, _L.TimeDistributed) and _is_plain_inside(layer.layer),
              lambda layer: find(layer.layer).weights(layer.layer), composite=True,
              types=keras_types("TimeDistributed")),
    LayerType("attention", _is_a(keras_types("MultiHeadAttention")), _attention_weights,
              flops="attention", composite=True, types=keras_types("MultiHeadAttention")),
    LayerType("protocol",
              lambda layer: callable(getattr(layer, "get_sparsifiable_weights", None)),
              _protocol_weights),
    _plain("einsum", "einsum", ("EinsumDense",)),
    _plain("conv_transpose", "conv_transpose",
           ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")),
    _plain("separable", "separable", ("SeparableConv1D", "SeparableConv2D"),
           "depthwise_kernel", "pointwise_kernel"),
    # tf_keras calls the kernel depthwise_kernel, Keras 3 kernel.
    _plain("depthwise", "depthwise", ("DepthwiseConv1D", "DepthwiseConv2D"),
           ("depthwise_kernel", "kernel")),
    _plain("conv", "conv", ("Conv1D", "Conv2D", "Conv3D")),
    _plain("dense", "dense", ("Dense",)),
    _plain("embedding", "embedding", ("Embedding",), "embeddings"),
)
_registered = []


def register(layer_type):
  """Adds a `LayerType`, looked up before the built-in ones; returns it.

  >>> kind = register(LayerType("mine", lambda layer: False, lambda layer: []))
  >>> "mine" in names()
  True
  >>> unregister("mine")
  """
  if not isinstance(layer_type, LayerType):
    raise TypeError(f"register takes a LayerType, got {type(layer_type).__name__}.")
  if layer_type.name in names():
    raise ValueError(f"A layer type named {layer_type.name!r} is already registered.")
  _registered.insert(0, layer_type)
  return layer_type


def unregister(name):
  """Removes a layer type added with `register` (built-in ones stay).

  >>> unregister("never_registered")
  Traceback (most recent call last):
  ...
  KeyError: "No registered layer type named 'never_registered'."
  """
  for layer_type in _registered:
    if layer_type.name == name:
      _registered.remove(layer_type)
      return
  raise KeyError(f"No registered layer type named {name!r}.")


def names():
  """Names of every layer type, in lookup order.

  >>> names()[-2:]
  ['dense', 'embedding']
  """
  return [t.name for t in _all()]


def _all():
  return tuple(_registered) + _BUILTIN


def find(layer):
  """The `LayerType` of `layer` (the first that matches), or None.

  >>> find(keras.layers.Conv2D(4, 3)).name, find(keras.layers.Flatten())
  ('conv', None)
  """
  return next((t for t in _all() if t.matches(layer)), None)


def counted(layer):
  """The first matching `LayerType` with a FLOPs kind, or None.

  A Dense subclass with ``get_sparsifiable_weights()`` is masked through
  the protocol but counted as the Dense layer it is.

  >>> counted(keras.layers.Dense(2)).name
  'dense'
  """
  return next((t for t in _all() if t.flops and t.matches(layer)), None)


def flops_kind(layer):
  """How `count_flops` counts `layer` ("dense", "conv", "rnn", ...), or None.

  >>> flops_kind(keras.layers.SeparableConv2D(4, 3)), flops_kind(keras.layers.ReLU())
  ('separable', None)
  """
  kind = counted(layer)
  return kind.flops if kind is not None else None


def builtin_types():
  """The Keras classes of the built-in non-composite types, in lookup order.

  >>> keras.layers.Dense in builtin_types()
  True
  """
  return tuple(c for t in _BUILTIN if not t.composite for c in t.types)


def einsum_matrix_shape(equation, kernel_shape):
  """(fan_in, fan_out) of an EinsumDense kernel from its equation.

  Kernel axes that also index the input are contracted (fan-in); the others
  index the output (fan-out). "abc,cde->abde" with kernel (c, d, e) gives
  (c, d * e). FLOPs counting (`keras_rigl.flops`) reads the fan-in from it.

  >>> einsum_matrix_shape("abc,cde->abde", (4, 2, 3))
  (4, 6)
  """
  inputs, _ = equation.split("->")
  input_spec, kernel_spec = inputs.split(",")
  fan_in = fan_out = 1
  for axis, size in zip(kernel_spec.strip(), kernel_shape):
    if axis in input_spec:
      fan_in *= int(size)
    else:
      fan_out *= int(size)
  return (fan_in, fan_out)


_EINSUM = keras_types("EinsumDense")


def matrix_shape(owner, variable):
  """The shape ER/ERK (and `kernel_shapes`) use for one weight of `owner`.

  The weight's own shape, except for an EinsumDense kernel (alone or inside
  MultiHeadAttention): it enters as the (fan_in, fan_out) matrix it
  multiplies by.

  >>> layer = keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 2, 3))
  >>> layer.build((None, None, 4))
  >>> matrix_shape(layer, layer.kernel)
  (4, 6)
  """
  equation = getattr(owner, "equation", None)
  if _EINSUM and isinstance(owner, _EINSUM) and isinstance(equation, str):
    return einsum_matrix_shape(equation, tuple(variable.shape))
  return tuple(int(d) for d in variable.shape)


def is_composite(layer):
  """True for layers whose masked kernels live on sublayers (RNN, attention...).

  >>> is_composite(keras.layers.LSTM(2)), is_composite(keras.layers.Dense(2))
  (True, False)
  """
  kind = find(layer)
  return kind is not None and kind.composite


def is_sparsifiable(layer):
  """True if SparseWrapper can wrap `layer` (a registered type or the protocol).

  >>> is_sparsifiable(keras.layers.Dense(2)), is_sparsifiable(keras.layers.Flatten())
  (True, False)
  """
  return find(layer) is not None


def sparse_slots(layer):
  """[(weight_key, owner, variable)] of a built layer: the weights to be masked.

  `owner` is the (sub)layer that stores the variable as an attribute: the
  layer itself, an RNN's cell, a Bidirectional's forward/backward cell, a
  TimeDistributed's inner layer or an attention projection. Raises a
  ValueError for a layer of no registered type.

  >>> sparse_slots(keras.layers.GRU(2, name="g"))
  Traceback (most recent call last):
  ...
  ValueError: Layer 'g' is not built; build it first.
  """
  kind = find(layer)
  if kind is None:
    supported = ", ".join(t.__name__ for t in builtin_types())
    composite = ", ".join(c.__name__ for t in _BUILTIN if t.composite for c in t.types)
    raise ValueError(
        f"SparseWrapper cannot wrap layer {layer.name!r} of type "
        f"{type(layer).__name__}. Supported: {supported}, {composite} (of "
        "SimpleRNN/LSTM/GRU or of the layers before), or any layer that defines "
        "get_sparsifiable_weights() returning its weight variables.")
  slots = kind.weights(layer)
  if kind.composite and any(variable is None for _, _, variable in slots):
    raise ValueError(f"Layer {layer.name!r} is not built; build it first.")
  return [slot for slot in slots if slot[2] is not None]


def sparsifiable_weights(layer):
  """[(weight_key, variable)] of a built layer: the weights to be masked.

  >>> dense = keras.layers.Dense(3)
  >>> dense.build((None, 5))
  >>> [key for key, _ in sparsifiable_weights(dense)]
  ['kernel']
  """
  return [(key, variable) for key, _, variable in sparse_slots(layer)]


def distribution_shapes(layer):
  """{weight_key: shape} that ER/ERK use for each sparse weight of `layer`.

  The kernel's own shape, except for EinsumDense kernels (alone or inside
  MultiHeadAttention): a 3-D projection kernel such as (d_model, heads,
  key_dim) enters ER/ERK as the matrix it multiplies by, (fan_in, fan_out) =
  (d_model, heads * key_dim), so that ERK treats an attention projection like
  the Dense layer it is. Recurrent kernels enter as they are stored:
  (n_in, gates * units) and (units, gates * units).

  >>> dense = keras.layers.Dense(3)
  >>> dense.build((None, 5))
  >>> distribution_shapes(dense)
  {'kernel': (5, 3)}
  """
  return {key: matrix_shape(owner, variable)
          for key, owner, variable in sparse_slots(layer)}
