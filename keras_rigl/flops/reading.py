"""Reading a model for FLOPs: its leaf layers and their calls, each layer's kind,
kernels and densities (masks, overrides, or non-zero weights).
"""

import math
import re

import numpy as np
from keras_rigl.backend import tf

from keras_rigl import _keras
from keras_rigl import backend
from keras_rigl._keras import keras
from keras_rigl import layer_registry
from keras_rigl.layer_registry import keras_types
from keras_rigl.walk import graph_leaves


_L = keras.layers


# Cell type -> (gates, element-wise gate ops per unit and step).
_CELL_COSTS = ((keras_types("LSTMCell"), (4, 5)), (keras_types("GRUCell"), (3, 5)),
               (keras_types("SimpleRNNCell"), (1, 0)))
_SEQUENCE_KINDS = ("rnn", "bidirectional", "attention")


def _is_sparse_wrapper(layer):
  # Duck typing: keras_rigl.SparseWrapper or anything shaped like it.
  return hasattr(layer, "masked_weights") and hasattr(layer, "layer")


def _is_graph_model(layer):
  return isinstance(layer, keras.Model)


def _flatten(structure):
  """tf.nest.flatten on TensorFlow (both flavours), keras.tree.flatten elsewhere."""
  if backend.IS_TENSORFLOW:
    return tf.nest.flatten(structure)
  return keras.tree.flatten(structure)


def _shape_of(tensors):
  first = _flatten(tensors)[0]
  shape = first.shape
  if isinstance(shape, backend.tf_types("TensorShape")):
    shape = shape.as_list()
  return tuple(shape)


def _calls(graph, layer, all_inputs=False):
  """[(input_shape, output_shape)] of every call of `layer` inside `graph`.

  With `all_inputs`, input_shape is the list of every input tensor's shape.
  """
  graph = getattr(graph, "_functional", None) or graph  # Keras 3 Sequential.
  nodes = list(getattr(layer, "_inbound_nodes", None) or [])
  # A layer shared by several models has nodes in each: keep this graph's.
  # Both flavours keep a set of node keys: "<layer>_ib-<index>", with the
  # layer's name in tf_keras and its id() in Keras 3.
  if _keras.IS_KERAS3:
    keys, owner = getattr(graph, "_nodes", None), str(id(layer))
  else:
    keys, owner = getattr(graph, "_network_nodes", None), layer.name
  if keys is not None:
    nodes = [node for index, node in enumerate(nodes)
             if f"{owner}_ib-{index}" in keys]
  if all_inputs:
    return [([tuple(t.shape.as_list() if isinstance(t.shape, backend.tf_types("TensorShape"))
              else t.shape) for t in _flatten(node.input_tensors)],
             _shape_of(node.output_tensors)) for node in nodes]
  return [(_shape_of(node.input_tensors), _shape_of(node.output_tensors))
          for node in nodes]


def _walk(model):
  """Yields (path, layer, graph, calls) for each leaf layer of `model`."""
  for leaf in graph_leaves(model, enter=_enters,
                           calls=lambda graph, layer: max(1, len(_calls(graph, layer)))):
    yield leaf.path, leaf.layer, leaf.graph, leaf.calls


def _enters(layer):
  return _is_graph_model(layer) and not _is_sparse_wrapper(layer)


def _kind(layer):
  """The FLOPs kind of `layer` (from the layer registry), or None."""
  if getattr(layer, "compressed_kind", None):  # keras_rigl.layers (compressed)
    return layer.compressed_kind
  return layer_registry.flops_kind(layer)


def _cell_costs(cell):
  for types, costs in _CELL_COSTS:
    if types and isinstance(cell, types):
      return costs
  return None


def _kernels(layer, kind):
  """[(key, variable)] of the kernels of a known layer type."""
  if hasattr(layer, "compressed_weights"):
    # Compressed layers: CompressedWeight has the dense .shape and .density.
    return [(w.key, w) for w in layer.compressed_weights]
  layer_type = layer_registry.counted(layer) if kind is not None else None
  if layer_type is None:
    return []
  kernels = []
  for key, _, variable in layer_type.weights(layer):
    if variable is None:
      raise ValueError(f"Layer {layer.name!r} is not built; call the model on an "
                       "input (or build it) before counting.")
    # Sparsity keys name a depthwise kernel "depthwise_kernel" in both flavours.
    kernels.append(("depthwise_kernel" if kind == "depthwise" else key, variable))
  return kernels


def _size(variable):
  return int(np.prod(tuple(variable.shape)))


def _value(variable):
  return _keras.variable_tensor(variable)


def _fraction_nonzero(variable):
  size = _size(variable)
  if not size:
    return 1.0
  if not backend.IS_TENSORFLOW:
    return float(np.count_nonzero(backend.to_numpy(variable))) / size
  return float(tf.math.count_nonzero(_value(variable))) / size


class _Densities:
  """Finds the density of each kernel: override, mask, weights, or 1."""

  def __init__(self, sparsities, nonzero_weights):
    self.overrides = {}
    for key, value in (sparsities or {}).items():
      value = float(value)
      if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ValueError(f"sparsities[{key!r}] must be in [0, 1], got {value!r}.")
      # Accept the authors' variable names, e.g. "conv1/kernel:0".
      self.overrides[re.sub(r":\d+$", "", str(key))] = value
    self.used = set()
    self.nonzero_weights = nonzero_weights

  def names(self, prefix, layer):
    """Names a sparsity key may use for this leaf (inner name first)."""
    names = []
    if _is_sparse_wrapper(layer):
      names += [prefix + layer.layer.name, layer.layer.name]
    names += [prefix + layer.name, layer.name]
    return list(dict.fromkeys(names))

  def density(self, names, key, variable, masks):
    """(density, from_mask) of one kernel."""
    aliases = [key, "kernel"] if key == "depthwise_kernel" else [key]
    candidates = [f"{n}/{a}" for n in names for a in aliases] + names
    for candidate in candidates:
      if candidate in self.overrides:
        self.used.add(candidate)
        return 1.0 - self.overrides[candidate], False
    if hasattr(variable, "nnz") and hasattr(variable, "density"):
      return variable.density, True  # A compressed weight (keras_rigl.layers).
    mask = _find_mask(variable, masks)
    if mask is not None:
      return _fraction_nonzero(mask), True
    if self.nonzero_weights:
      return _fraction_nonzero(variable), False
    return 1.0, False

  def check_all_used(self):
    unused = sorted(set(self.overrides) - self.used)
    if unused:
      raise ValueError(
          f"sparsities names {unused}, which match no layer with a kernel. Use "
          "layer names (or 'name/depthwise_kernel', 'name/pointwise_kernel' for "
          "separable convolutions).")


def _find_mask(variable, masks):
  """The mask of `variable` among a wrapper's (weight, mask) pairs, or None."""
  for weight, mask in masks:
    if weight is variable:
      return mask
  for weight, mask in masks:
    path = getattr(weight, "path", None) or weight.name
    if path == (getattr(variable, "path", None) or variable.name):
      return mask
  same_shape = [m for w, m in masks if tuple(w.shape) == tuple(variable.shape)]
  return same_shape[0] if len(masks) == 1 and same_shape else None


def _masks_of(layer):
  return list(layer.masked_weights) if _is_sparse_wrapper(layer) else []


def _spatial(shape, data_format):
  """Product of the spatial dims of a (batch-less) feature-map shape."""
  dims = shape[1:] if data_format == "channels_first" else shape[:-1]
  return int(np.prod(dims)) if dims else 1


def _check_known(shape, name, what=None):
  if any(d is None for d in shape):
    if what == "sequence_length":
      raise ValueError(
          f"Layer {name!r} sees a sequence of unknown length; pass "
          "count_flops(..., sequence_length=N) (or build the model on "
          "keras.Input((N, ...))) to count its FLOPs per time step times N.")
    raise ValueError(
        f"Layer {name!r} sees shape {tuple(shape)} with unknown dims; build the "
        "model with a fixed input shape (e.g. keras.Input((224, 224, 3))) to "
        "count FLOPs.")


def _fill_time(shape, sequence_length):
  """`shape` (batch first) with an unknown time axis set to sequence_length."""
  shape = tuple(shape)
  if len(shape) >= 3 and shape[1] is None and sequence_length:
    return (shape[0], int(sequence_length)) + shape[2:]
  return shape


def _einsum_fan_in(layer):
  """Contracted size K of an EinsumDense kernel (its dot-product length)."""
  return layer_registry.matrix_shape(layer, layer.kernel)[0]


def _check_model(model):
  if not _is_graph_model(model):
    raise TypeError(f"Expected a keras Model, got {type(model).__name__}.")
