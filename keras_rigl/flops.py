"""FLOPs and model-size accounting, counted the way the RigL paper counts.

The paper (Appendix H) and the authors' colabs count with the MicroNet
challenge rules:

* Only layers with kernels cost FLOPs: convolutions (incl. depthwise,
  separable, transposed) and Dense layers. Batch norm, pooling, residual adds
  and standalone activations are ignored.
* Multiplies and adds are counted separately. A dot product of length ``n``
  is ``n`` multiplies and ``n - 1`` adds; every kernel layer is charged one
  bias add and one activation op per output element (whatever actually
  follows it, as in the authors' count). So one output element of a layer
  with ``K`` weights per output costs ``2 * K * density + 1`` FLOPs.
* A sparse kernel counts only its non-zero weights: the ``K`` part scales with
  the kernel's density (the mean of its mask). The first layer is counted
  like any other.

Sequence layers (our extension of the same rules; the authors' counter has
no recurrent or attention layers, so we count them the way it counts Dense):

* A recurrent layer (SimpleRNN, LSTM, GRU; both directions of a
  Bidirectional) costs its per-time-step FLOPs times the sequence length
  ``T``. One step computes ``g * units`` gate pre-activations (``g`` = 1, 4, 3
  gates), each a dot product over the input and the previous state:
  ``2 * (n_in * d_kernel + units * d_recurrent) + 1`` FLOPs (multiplies and
  adds of both products, their sum, the bias add and the gate activation,
  exactly ``2 K d + 1`` of a Dense output). The element-wise gate arithmetic
  adds ``5 * units`` per step for LSTM (``f*c``, ``i*g``, their sum,
  ``tanh(c)``, ``o*tanh(c)``) and for GRU (``r*h``-part, ``z*h``, ``1-z``,
  ``(1-z)*h~``, their sum), 0 for SimpleRNN. Only the ``K`` part scales with
  the masks' densities.
* TimeDistributed(layer) costs the layer's FLOPs once per time step.
* EinsumDense and the query/key/value/output projections of
  MultiHeadAttention count like Dense: ``2 * K * d + 1`` per output element,
  ``K`` being the kernel's contracted (fan-in) size.
* The attention scores ``Q K^T``, the softmax and the weighted sum of the
  values have no weights, so by the paper's rules they cost nothing and
  ``count_flops`` leaves them out. ``include_attention_scores=True`` adds
  them (per head: ``Tq*Tv*(2k-1)`` for the scores, ``3*Tq*Tv`` for the softmax
  (exp, sum, divide), ``Tq*k`` for the ``1/sqrt(k)`` scaling, ``Tq*v*(2Tv-1)``
  for the weighted sum) as FLOPs that do not scale with density.
* The sequence length is read from the model's input shape; when that is
  unknown (``keras.Input((None,))``) pass ``sequence_length=``. The length
  used is reported as ``FlopsCount.sequence_length``.

Training FLOPs follow Appendix H: a training step costs 3 forward passes
(forward ``f``, backward ``2 f``: gradients w.r.t. activations and
weights), so ``3 f_D`` per example dense, ``3 f_S`` for static / SET / SNIP,
``2 f_S + f_D`` for SNFS (dense weight gradients every step), and
``(3 f_S dT + 2 f_S + f_D) / (dT + 1)`` for RigL (dense gradients once every
``dT`` steps). Magnitude pruning pays ``3 f(t)`` with ``f(t)`` following the
sparsity schedule.
"""

import dataclasses
import math
import re

import numpy as np
import tensorflow as tf

from keras_rigl import _keras
from keras_rigl._keras import keras

_L = keras.layers


def _types(*names):
  return tuple(getattr(_L, name) for name in names if hasattr(_L, name))


# Order matters: in tf_keras Conv2DTranspose subclasses Conv2D.
_TRANSPOSE = _types("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
_SEPARABLE = _types("SeparableConv1D", "SeparableConv2D")
_DEPTHWISE = _types("DepthwiseConv1D", "DepthwiseConv2D")
_CONV = _types("Conv1D", "Conv2D", "Conv3D")
_DENSE = _types("Dense")
_EMBEDDING = _types("Embedding")
_EINSUM = _types("EinsumDense")
# Cell type -> (gates, element-wise gate ops per unit and step).
_CELL_COSTS = ((_types("LSTMCell"), (4, 5)), (_types("GRUCell"), (3, 5)),
               (_types("SimpleRNNCell"), (1, 0)))
_SEQUENCE_KINDS = ("rnn", "bidirectional", "attention")

METHODS = ("dense", "static", "set", "snip", "rigl", "snfs", "pruning")


@dataclasses.dataclass(frozen=True)
class LayerFlops:
  """Inference FLOPs of one layer with a kernel, per example.

  Attributes:
    name: layer name (``outer/inner`` inside nested models; the wrapped
      layer's name for a SparseWrapper).
    type: class name of the computing layer, e.g. "Conv2D".
    dense_flops: FLOPs with every weight present.
    sparse_flops: FLOPs counting only non-zero weights.
    density: fraction of the layer's kernel weights that are non-zero.
    params: number of kernel weights.
    fixed_flops: the part of the FLOPs that does not scale with density
      (bias adds, activations, minus one add per dot product).
    masked: True if the density came from a SparseWrapper's masks.
  """
  name: str
  type: str
  dense_flops: float
  sparse_flops: float
  density: float
  params: int
  fixed_flops: float
  masked: bool = False


@dataclasses.dataclass(frozen=True)
class FlopsCount:
  """Result of `count_flops`: totals per example and one row per layer.

  Attributes:
    dense: inference FLOPs per example if every kernel were dense.
    sparse: inference FLOPs per example counting only non-zero weights.
    layers: list of `LayerFlops` rows, in model order.
  """
  dense: float
  sparse: float
  layers: list
  sequence_length: int = None  # Time steps of recurrent/attention layers.

  @property
  def ratio(self):
    """sparse / dense, the "FLOPs (x dense)" columns of the paper."""
    return self.sparse / self.dense if self.dense else 1.0

  @property
  def params(self):
    """Kernel weights of the counted layers."""
    return sum(row.params for row in self.layers)

  @property
  def nnz(self):
    """Non-zero kernel weights of the counted layers."""
    return sum(row.params * row.density for row in self.layers)

  def table(self, scale=1e6):
    """A printable table of the rows and the totals (MFLOPs by default).

    Example:
    >>> from keras_rigl import models
    >>> print(count_flops(models.lenet300_100()).table())  # doctest: +ELLIPSIS
    layer ...
    """
    unit = {1.0: "FLOPs", 1e3: "KFLOPs", 1e6: "MFLOPs", 1e9: "GFLOPs"}.get(
        scale, f"x{scale:g} FLOPs")
    header = ("layer", "type", "density", f"dense {unit}", f"sparse {unit}")
    lines = [(row.name, row.type, f"{row.density:.3f}",
              f"{row.dense_flops / scale:,.3f}", f"{row.sparse_flops / scale:,.3f}")
             for row in self.layers]
    density = self.nnz / self.params if self.params else 1.0
    total = ("total", f"{self.ratio:.3f}x dense", f"{density:.3f}",
             f"{self.dense / scale:,.3f}", f"{self.sparse / scale:,.3f}")
    widths = [max(len(str(line[i])) for line in [header, total] + lines)
              for i in range(len(header))]

    def fmt(line):
      left = [str(v).ljust(w) for v, w in zip(line[:2], widths[:2])]
      right = [str(v).rjust(w) for v, w in zip(line[2:], widths[2:])]
      return "  ".join(left + right)

    rule = "-" * len(fmt(header))
    text = "\n".join([fmt(header), rule] + [fmt(l) for l in lines] + [rule, fmt(total)])
    if self.sequence_length:
      text += f"\n(per sequence of {self.sequence_length} time steps)"
    return text

  def __str__(self):
    return self.table()


# --------------------------------------------------------------------------
# Walking a model: leaf layers, their call shapes, their kernels.


def _is_sparse_wrapper(layer):
  # Duck typing: keras_rigl.SparseWrapper or anything shaped like it.
  return hasattr(layer, "masked_weights") and hasattr(layer, "layer")


def _is_graph_model(layer):
  return isinstance(layer, keras.Model)


def _shape_of(tensors):
  first = tf.nest.flatten(tensors)[0]
  shape = first.shape
  if isinstance(shape, tf.TensorShape):
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
    return [([tuple(t.shape.as_list() if isinstance(t.shape, tf.TensorShape) else t.shape)
              for t in tf.nest.flatten(node.input_tensors)],
             _shape_of(node.output_tensors)) for node in nodes]
  return [(_shape_of(node.input_tensors), _shape_of(node.output_tensors))
          for node in nodes]


def _walk(model, prefix="", calls=1):
  """Yields (path, layer, graph, calls) for each leaf layer of `model`."""
  for layer in model.layers:
    if _is_graph_model(layer) and not _is_sparse_wrapper(layer):
      inner_calls = max(1, len(_calls(model, layer)))
      yield from _walk(layer, f"{prefix}{layer.name}/", calls * inner_calls)
    else:
      yield prefix, layer, model, calls


def _kind(layer):
  if getattr(layer, "compressed_kind", None):  # keras_rigl.layers (compressed)
    return layer.compressed_kind
  if isinstance(layer, _L.RNN) and _cell_costs(getattr(layer, "cell", None)):
    return "rnn"
  if isinstance(layer, _L.Bidirectional) and _kind(layer.forward_layer) == "rnn":
    return "bidirectional"
  if isinstance(layer, _L.MultiHeadAttention):
    return "attention"
  if isinstance(layer, _EINSUM):
    return "einsum"
  if isinstance(layer, _TRANSPOSE):
    return "conv_transpose"
  if isinstance(layer, _SEPARABLE):
    return "separable"
  if isinstance(layer, _DEPTHWISE):
    return "depthwise"
  if isinstance(layer, _CONV):
    return "conv"
  if isinstance(layer, _DENSE):
    return "dense"
  if isinstance(layer, _EMBEDDING):
    return "embedding"
  return None


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
  if kind in ("rnn", "bidirectional", "attention"):
    return _sequence_kernels(layer, kind)
  if kind == "separable":
    attrs = ("depthwise_kernel", "pointwise_kernel")
  elif kind == "depthwise":
    # tf_keras calls it depthwise_kernel, Keras 3 kernel.
    attrs = ("depthwise_kernel",) if getattr(layer, "depthwise_kernel", None) is not None \
        else ("kernel",)
  elif kind == "embedding":
    attrs = ("embeddings",)
  elif kind is None:
    return []
  else:
    attrs = ("kernel",)
  kernels = []
  for attr in attrs:
    variable = getattr(layer, attr, None)
    if variable is None:
      raise ValueError(f"Layer {layer.name!r} is not built; call the model on an "
                       "input (or build it) before counting.")
    key = "depthwise_kernel" if kind == "depthwise" else attr
    kernels.append((key, variable))
  return kernels


def _size(variable):
  return int(np.prod(tuple(variable.shape)))


def _value(variable):
  return _keras.variable_tensor(variable)


def _fraction_nonzero(variable):
  size = _size(variable)
  if not size:
    return 1.0
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


def _layer_row(prefix, leaf, graph, calls, densities, options=None):
  """A LayerFlops for a leaf layer with a kernel, or None."""
  options = options or {}
  inner = leaf.layer if _is_sparse_wrapper(leaf) else leaf
  time_distributed = isinstance(inner, _L.TimeDistributed)
  if time_distributed:
    inner = inner.layer
  kind = _kind(inner)
  if kind in (None, "embedding"):
    return None  # Lookups and layers we cannot reason about cost no FLOPs.
  if kind in _SEQUENCE_KINDS:
    return _sequence_row(prefix, leaf, inner, kind, graph, calls, densities, options)
  names = densities.names(prefix, leaf)
  masks = _masks_of(leaf)
  kernels = []
  for key, variable in _kernels(inner, kind):
    density, from_mask = densities.density(names, key, variable, masks)
    kernels.append((key, variable, density, from_mask))
  shapes = _calls(graph, leaf)
  if not shapes:
    raise ValueError(
        f"Layer {names[0]!r} has no call recorded in its model. count_flops needs "
        "a Functional or Sequential model built on keras.Input(...) (subclassed "
        "models do not record layer shapes).")
  data_format = getattr(inner, "data_format", "channels_last")
  dense = sparse = fixed = 0.0
  for input_shape, output_shape in shapes:
    length = options.get("sequence_length")
    input_shape = _fill_time(input_shape, length)
    # Keras 3 EinsumDense reports its declared output_shape (None for time).
    output_shape = _fill_time(output_shape, input_shape[1] if len(input_shape) >= 3
                              and input_shape[1] is not None else length)
    input_shape, output_shape = input_shape[1:], output_shape[1:]
    repeat = 1
    if time_distributed:  # The inner layer runs once per time step.
      _check_known(output_shape[:1], names[0], "sequence_length")
      repeat, input_shape, output_shape = output_shape[0], input_shape[1:], output_shape[1:]
    _check_known(output_shape, names[0])
    n_out = int(np.prod(output_shape))
    if kind == "einsum":
      # Each output element is a dot product over the kernel's fan-in.
      fan_in = _einsum_fan_in(inner)
      positions = n_out / (int(np.prod(inner.kernel.shape)) // fan_in)
    elif kind == "dense":
      positions = int(np.prod(output_shape[:-1])) if len(output_shape) > 1 else 1
    elif kind == "conv_transpose":
      # Each kernel weight is used once per *input* position.
      _check_known(input_shape, names[0])
      positions = _spatial(input_shape, data_format)
    else:
      positions = _spatial(output_shape, data_format)
    # n multiplies and n - 1 adds per dot product, + bias add + activation.
    macs_dense = sum(_size(v) for _, v, _, _ in kernels) * positions
    macs_sparse = sum(_size(v) * d for _, v, d, _ in kernels) * positions
    call_fixed = n_out
    if kind == "separable":
      # The depthwise half has its own dot products, without bias/activation.
      depthwise = kernels[0][1]
      call_fixed -= positions * int(depthwise.shape[-2]) * int(depthwise.shape[-1])
    dense += repeat * calls * (2 * macs_dense + call_fixed)
    sparse += repeat * calls * (2 * macs_sparse + call_fixed)
    fixed += repeat * calls * call_fixed
  params = sum(_size(v) for _, v, _, _ in kernels)
  nnz = sum(_size(v) * d for _, v, d, _ in kernels)
  return LayerFlops(
      name=names[0], type=(f"TimeDistributed({type(inner).__name__})" if time_distributed
                           else type(inner).__name__), dense_flops=float(dense),
      sparse_flops=float(sparse), density=nnz / params if params else 1.0,
      params=params, fixed_flops=float(fixed),
      masked=any(from_mask for _, _, _, from_mask in kernels))


# --------------------------------------------------------------------------
# Recurrent and attention layers (see the module docstring for the rules).


def _einsum_fan_in(layer):
  """Contracted size K of an EinsumDense kernel (its dot-product length)."""
  inputs = layer.equation.split("->")[0]
  input_spec, kernel_spec = inputs.split(",")
  return int(np.prod([int(size) for axis, size in zip(kernel_spec.strip(), layer.kernel.shape)
                      if axis in input_spec] or [1]))


_ATTENTION_PARTS = (("query", "_query_dense"), ("key", "_key_dense"),
                    ("value", "_value_dense"), ("output", "_output_dense"))


def _sequence_kernels(layer, kind):
  """[(key, variable)] of an RNN, Bidirectional or MultiHeadAttention layer."""
  if kind == "rnn":
    if getattr(layer.cell, "kernel", None) is None:
      raise ValueError(f"Layer {layer.name!r} is not built; call the model on an "
                       "input (or build it) before counting.")
    return [("kernel", layer.cell.kernel), ("recurrent_kernel", layer.cell.recurrent_kernel)]
  if kind == "bidirectional":
    return [(f"{side}_{key}", variable)
            for side, rnn in (("forward", layer.forward_layer), ("backward", layer.backward_layer))
            for key, variable in _sequence_kernels(rnn, "rnn")]
  parts = [(part, getattr(layer, attr, None)) for part, attr in _ATTENTION_PARTS]
  if any(sub is None or not sub.built for _, sub in parts):
    raise ValueError(f"Layer {layer.name!r} is not built; call the model on an "
                     "input (or build it) before counting.")
  return [(f"{part}_kernel", sub.kernel) for part, sub in parts]


def _rnn_flops(layer, length, density):
  """(dense, sparse, fixed) FLOPs of one recurrent layer over `length` steps."""
  gates, elementwise = _cell_costs(layer.cell)
  kernel, recurrent = layer.cell.kernel, layer.cell.recurrent_kernel
  n_in, units = int(kernel.shape[0]), int(recurrent.shape[0])
  outputs = gates * units
  fixed = outputs + elementwise * units  # bias add + activation; gate arithmetic.
  dense = 2 * (n_in + units) * outputs + fixed
  sparse = 2 * (n_in * density["kernel"] + units * density["recurrent_kernel"]) * outputs + fixed
  return length * dense, length * sparse, length * fixed


def _attention_flops(layer, query_shape, value_shape, density, scores):
  """(dense, sparse, fixed) FLOPs of one MultiHeadAttention call."""
  t_q = int(np.prod(query_shape[1:-1]))
  t_v = int(np.prod(value_shape[1:-1]))
  kernels = dict(_sequence_kernels(layer, "attention"))
  heads, key_dim = (int(d) for d in kernels["query_kernel"].shape[-2:])
  value_dim = int(kernels["value_kernel"].shape[-1])
  # (output elements, fan-in) of each projection.
  shapes = {"query_kernel": (t_q * heads * key_dim, int(kernels["query_kernel"].shape[0])),
            "key_kernel": (t_v * heads * key_dim, int(kernels["key_kernel"].shape[0])),
            "value_kernel": (t_v * heads * value_dim, int(kernels["value_kernel"].shape[0])),
            "output_kernel": (t_q * int(kernels["output_kernel"].shape[-1]), heads * value_dim)}
  dense = sparse = fixed = 0.0
  for key, (n_out, fan_in) in shapes.items():
    dense += n_out * (2 * fan_in + 1)
    sparse += n_out * (2 * fan_in * density[key] + 1)
    fixed += n_out
  if scores:
    extra = heads * (t_q * t_v * (2 * key_dim - 1) + 3 * t_q * t_v + t_q * key_dim
                     + t_q * value_dim * (2 * t_v - 1))
    dense, sparse, fixed = dense + extra, sparse + extra, fixed + extra
  return dense, sparse, fixed


def _sequence_row(prefix, leaf, inner, kind, graph, calls, densities, options):
  """LayerFlops of a recurrent, bidirectional or attention layer."""
  names = densities.names(prefix, leaf)
  masks = _masks_of(leaf)
  kernels = []
  density = {}
  for key, variable in _sequence_kernels(inner, kind):
    value, from_mask = densities.density(names, key, variable, masks)
    density[key] = value
    kernels.append((variable, value, from_mask))
  shapes = _calls(graph, leaf, all_inputs=True)
  if not shapes:
    raise ValueError(
        f"Layer {names[0]!r} has no call recorded in its model. count_flops needs "
        "a Functional or Sequential model built on keras.Input(...).")
  length = options.get("sequence_length")
  dense = sparse = fixed = 0.0
  for input_shapes, _ in shapes:
    input_shapes = [_fill_time(s, length) for s in input_shapes]
    if kind == "attention":
      query, value = input_shapes[0], input_shapes[1] if len(input_shapes) > 1 else input_shapes[0]
      for shape in (query, value):
        _check_known(shape[1:-1], names[0], "sequence_length")
      options.setdefault("seen_length", int(query[1]))
      d, s, f = _attention_flops(inner, query, value, density,
                                 options.get("include_attention_scores", False))
    else:
      steps = input_shapes[0][1]
      _check_known((steps,), names[0], "sequence_length")
      options.setdefault("seen_length", int(steps))
      rnns = ([("", inner)] if kind == "rnn" else
              [("forward_", inner.forward_layer), ("backward_", inner.backward_layer)])
      d = s = f = 0.0
      for side, rnn in rnns:
        part = {key: density[side + key] for key in ("kernel", "recurrent_kernel")}
        dd, ss, ff = _rnn_flops(rnn, int(steps), part)
        d, s, f = d + dd, s + ss, f + ff
    dense, sparse, fixed = dense + calls * d, sparse + calls * s, fixed + calls * f
  params = sum(_size(v) for v, _, _ in kernels)
  nnz = sum(_size(v) * d for v, d, _ in kernels)
  return LayerFlops(
      name=names[0], type=type(inner).__name__, dense_flops=float(dense),
      sparse_flops=float(sparse), density=nnz / params if params else 1.0,
      params=params, fixed_flops=float(fixed),
      masked=any(from_mask for _, _, from_mask in kernels))


def _check_model(model):
  if not _is_graph_model(model):
    raise TypeError(f"Expected a keras Model, got {type(model).__name__}.")


def count_flops(model, sparsities=None, nonzero_weights=False,
                sequence_length=None, include_attention_scores=False):
  """Dense and sparse inference FLOPs per example, counted like the paper.

  Every Conv (1D/2D/3D, depthwise, separable, transposed) and Dense layer
  costs ``2 * K * density + 1`` FLOPs per output element, where ``K`` is the
  number of kernel weights that feed one output (multiplies and adds counted
  separately, plus one bias add and one activation op, as in the authors'
  MicroNet-style count). Batch norm, pooling and adds are ignored. Layers
  wrapped in a `keras_rigl.SparseWrapper` take their density from their masks;
  nested models are counted recursively.

  Args:
    model: a built Functional or Sequential model (fixed input size).
    sparsities: optional {layer name: sparsity} that sets the sparsity of a
      layer's kernel without building masks (e.g. from
      `keras_rigl.layer_sparsities`), overriding masks. Separable convs also
      take "name/depthwise_kernel" and "name/pointwise_kernel"; the authors'
      "name/kernel:0" form is accepted too. An unknown name is a ValueError.
    nonzero_weights: if True, layers that are neither wrapped nor in
      `sparsities` count the non-zero entries of their kernels (e.g. a model
      after `keras_rigl.strip`); by default they count as dense.
    sequence_length: time steps to assume where the model's input length is
      unknown (``keras.Input((None, ...))``); recurrent layers cost their
      per-step FLOPs times this, per-step layers (Dense/TimeDistributed on a
      sequence) run this many times.
    include_attention_scores: also count the weight-free attention products
      (``Q K^T``, softmax, weighted sum of values), which the paper's rules
      leave out.

  Returns:
    A `FlopsCount` with ``dense``, ``sparse``, ``ratio``, ``layers``,
    ``sequence_length`` (the length recurrent/attention layers saw) and
    ``table()``.

  Example:
  >>> from keras_rigl import models
  >>> result = count_flops(models.lenet300_100())
  >>> int(result.dense)   # 2*784*300+300 + 2*300*100+100 + 2*100*10+10
  532810
  >>> half = count_flops(models.lenet300_100(), sparsities={"fc1": 0.5})
  >>> int(half.sparse)
  297610
  >>> gru = keras.Sequential([keras.Input((None, 8)), keras.layers.GRU(16)])
  >>> per_step = 2 * (8 + 16) * 48 + 48 + 5 * 16   # 2 K d + 1 per gate output
  >>> count_flops(gru, sequence_length=10).dense == 10 * per_step
  True
  """
  _check_model(model)
  if sequence_length is not None and (
      isinstance(sequence_length, bool) or int(sequence_length) != sequence_length
      or sequence_length < 1):
    raise ValueError(f"sequence_length must be a positive integer, got {sequence_length!r}.")
  densities = _Densities(sparsities, nonzero_weights)
  options = {"sequence_length": sequence_length,
             "include_attention_scores": bool(include_attention_scores)}
  rows = []
  for prefix, leaf, graph, calls in _walk(model):
    row = _layer_row(prefix, leaf, graph, calls, densities, options)
    if row is not None:
      rows.append(row)
  densities.check_all_used()
  return FlopsCount(dense=float(sum(r.dense_flops for r in rows)),
                    sparse=float(sum(r.sparse_flops for r in rows)),
                    layers=rows, sequence_length=options.get("seen_length"))


# --------------------------------------------------------------------------
# Model size.


def _out_channels(layer, kind):
  """Output channels of a kernel layer (the size a folded bias would have)."""
  kernels = _kernels(layer, kind)
  last = tuple(kernels[-1][1].shape)
  if kind == "depthwise":
    return int(last[-2]) * int(last[-1])
  if kind == "conv_transpose":
    return int(last[-2])
  return int(last[-1])


def _is_batch_norm(layer):
  return isinstance(layer, _L.BatchNormalization)


def model_size_bytes(model, bits_per_weight=32, sparsities=None,
                     nonzero_weights=False, fold_batch_norm=False):
  """Bytes needed to store the model's weights for inference.

  A sparse kernel stores its non-zero values at `bits_per_weight` plus a
  1-bit mask per element (the authors' count); every other weight (dense
  kernels, biases, batch-norm parameters and statistics) is stored dense at
  `bits_per_weight`. Mask variables themselves are not counted again.

  Args:
    model: a Keras model; SparseWrapper layers are read through their masks.
    bits_per_weight: bits of one stored value (32 for float32).
    sparsities: optional {layer name: sparsity} for unwrapped kernels, as in
      `count_flops`.
    nonzero_weights: if True, unwrapped kernels count their non-zero entries.
    fold_batch_norm: if True, count the model as deployed with batch norm
      folded into the convolutions: BatchNormalization weights are dropped
      and every conv/Dense layer without a bias is given one bias value per
      output channel. This is exactly what the authors' model sizes count.

  Returns:
    The size in bytes (an int, bits rounded up).

  Example:
  >>> from keras_rigl import models
  >>> model_size_bytes(models.lenet300_100())   # 266,610 float32 weights
  1066440
  >>> model_size_bytes(models.lenet300_100(), sparsities={"fc1": 0.9})
  249120
  """
  _check_model(model)
  if bits_per_weight <= 0:
    raise ValueError(f"bits_per_weight must be positive, got {bits_per_weight!r}.")
  densities = _Densities(sparsities, nonzero_weights)
  seen = set()
  bits = 0.0
  for prefix, leaf, _, _ in _walk(model):
    inner = leaf.layer if _is_sparse_wrapper(leaf) else leaf
    if fold_batch_norm and _is_batch_norm(inner):
      continue  # Folded into the preceding layer's kernel and bias.
    kind = _kind(inner)
    masks = _masks_of(leaf)
    names = densities.names(prefix, leaf)
    kernel_keys = {id(v): key for key, v in _kernels(inner, kind)}
    masked = {id(w) for w, _ in masks}
    for variable in list(inner.weights) + [w for w, _ in masks]:
      if id(variable) in seen:
        continue
      seen.add(id(variable))
      size = _size(variable)
      if id(variable) in kernel_keys:
        density, _ = densities.density(names, kernel_keys[id(variable)], variable, masks)
      elif id(variable) in masked:  # A custom layer's masked weight.
        density = _fraction_nonzero(_find_mask(variable, masks))
      else:
        density = 1.0
      bits += size * density * bits_per_weight
      if density < 1.0:
        bits += size  # The 1-bit mask that says where the values go.
    if (fold_batch_norm and kind not in (None, "embedding", "einsum") + _SEQUENCE_KINDS
        and getattr(inner, "bias", None) is None):
      bits += _out_channels(inner, kind) * bits_per_weight
  densities.check_all_used()
  return int(math.ceil(bits / 8))


def kernel_shapes(model):
  """{name: kernel shape} of the layers `count_flops` counts.

  The keys are the ones `count_flops(sparsities=...)` and
  `keras_rigl.layer_sparsities` use: the layer name, or
  "name/depthwise_kernel" and "name/pointwise_kernel" for separable convs.
  Wrapped layers appear under the wrapped layer's name.

  Example:
  >>> from keras_rigl import models
  >>> kernel_shapes(models.lenet300_100())
  {'fc1': (784, 300), 'fc2': (300, 100), 'logits': (100, 10)}
  """
  _check_model(model)
  shapes = {}
  for prefix, leaf, _, _ in _walk(model):
    inner = leaf.layer if _is_sparse_wrapper(leaf) else leaf
    name = prefix + inner.name
    if isinstance(inner, _L.TimeDistributed):
      inner = inner.layer
    kind = _kind(inner)
    if kind in (None, "embedding"):
      continue
    kernels = _kernels(inner, kind)
    for key, variable in kernels:
      shape = tuple(int(d) for d in variable.shape)
      if kind in ("einsum", "attention"):
        # As sparsify's ER/ERK see them: the (fan_in, fan_out) matrix.
        fan_in = _einsum_fan_in(inner if kind == "einsum" else
                                getattr(inner, f"_{key[:-len('_kernel')]}_dense"))
        shape = (fan_in, int(np.prod(shape)) // fan_in)
      shapes[f"{name}/{key}" if len(kernels) > 1 else name] = shape
  return shapes


# --------------------------------------------------------------------------
# Training FLOPs.


def _pruning_sparsity_sum(steps, begin, end, frequency, initial, final):
  """Sum over steps of the Zhu & Gupta sparsity s(t), 0 before `begin`."""
  if steps <= begin:
    return 0.0
  span = max(end - begin, 0)
  ramp_updates = int(math.ceil(span / frequency)) if span else 0
  update_steps = begin + frequency * np.arange(ramp_updates, dtype=np.float64)
  update_steps = update_steps[update_steps < steps]
  held = np.minimum(frequency, steps - update_steps)
  progress = (update_steps - begin) / span if span else np.ones_like(update_steps)
  values = final + (initial - final) * (1.0 - progress) ** 3
  total = float(np.sum(values * held))
  done = begin + frequency * ramp_updates  # First update at the final sparsity.
  if steps > done:
    total += final * (steps - done)
  return total


def training_flops(model_or_flops, method, steps, batch_size, update_freq=100,
                   end_step=None, pruning_begin_step=0, pruning_end_step=None,
                   pruning_frequency=1, initial_sparsity=0.0,
                   final_sparsity=None, sparsities=None):
  """Total training FLOPs of a run, with the formulas of the paper's App. H.

  Per example and step (``f_D``/``f_S``: dense/sparse inference FLOPs):

  * ``dense``: ``3 f_D``; ``static``, ``set``, ``snip``: ``3 f_S`` (mask
    updates and SNIP's one saliency pass are negligible and not counted).
  * ``snfs``: ``2 f_S + f_D`` (dense weight gradients every step).
  * ``rigl``: ``(3 f_S dT + 2 f_S + f_D) / (dT + 1)`` with ``dT =
    update_freq`` (a dense gradient once per update).
  * ``pruning``: ``3 f(t)``; the model (or count) describes the *final*
    network and each sparse layer's sparsity follows the Zhu & Gupta cubic
    schedule ``s_f + (s_i - s_f) (1 - p)^3`` from `pruning_begin_step` to
    `pruning_end_step`, updated every `pruning_frequency` steps; the model is
    dense before the schedule starts.

  Args:
    model_or_flops: a model (counted with `count_flops`) or a `FlopsCount`.
    method: one of "dense", "static", "set", "snip", "rigl", "snfs",
      "pruning".
    steps: number of training steps.
    batch_size: examples per step (global batch).
    update_freq: RigL's mask update interval dT.
    end_step: for "rigl"/"snfs", the step after which masks stop changing and
      no dense gradients are computed (None: the whole run, as in the paper).
    pruning_begin_step: step at which pruning starts.
    pruning_end_step: step at which the final sparsity is reached (default:
      `steps`).
    pruning_frequency: steps between two pruning updates.
    initial_sparsity: sparsity the schedule starts from at
      `pruning_begin_step`.
    final_sparsity: sparsity the schedule ends at; only its ratio to
      `initial_sparsity` matters (default: the final model's sparsity).
    sparsities: passed to `count_flops` when a model is given.

  Returns:
    Total training FLOPs of the run (a float).

  Example:
  >>> from keras_rigl import models
  >>> model = models.lenet300_100()
  >>> training_flops(model, "dense", steps=10, batch_size=100)
  1598430000.0
  >>> count = count_flops(model, sparsities={"fc1": 0.9, "fc2": 0.9})
  >>> training_flops(count, "rigl", 10, 100) < training_flops(count, "snfs", 10, 100)
  True
  """
  if method not in METHODS:
    raise ValueError(f"Unknown method {method!r}; use one of {METHODS}.")
  if int(steps) != steps or steps < 0:
    raise ValueError(f"steps must be a non-negative integer, got {steps!r}.")
  if int(batch_size) != batch_size or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
  if int(update_freq) != update_freq or update_freq < 1:
    raise ValueError(f"update_freq must be a positive integer, got {update_freq!r}.")
  steps, batch_size, update_freq = int(steps), int(batch_size), int(update_freq)
  if isinstance(model_or_flops, FlopsCount):
    if sparsities is not None:
      raise ValueError("sparsities only applies when a model is given; pass them "
                       "to count_flops instead.")
    result = model_or_flops
  else:
    result = count_flops(model_or_flops, sparsities=sparsities)
  f_dense, f_sparse = result.dense, result.sparse

  if method == "dense":
    per_example = 3 * f_dense * steps
  elif method in ("static", "set", "snip"):
    per_example = 3 * f_sparse * steps
  elif method in ("rigl", "snfs"):
    if method == "rigl":
      dynamic = (3 * f_sparse * update_freq + 2 * f_sparse + f_dense) / (update_freq + 1)
    else:
      dynamic = 2 * f_sparse + f_dense
    dynamic_steps = steps if end_step is None else min(steps, max(0, int(end_step)))
    per_example = dynamic * dynamic_steps + 3 * f_sparse * (steps - dynamic_steps)
  else:  # pruning
    begin = int(pruning_begin_step)
    end = steps if pruning_end_step is None else int(pruning_end_step)
    if begin < 0 or end < begin:
      raise ValueError(f"Need 0 <= pruning_begin_step <= pruning_end_step, got "
                       f"{pruning_begin_step!r} and {pruning_end_step!r}.")
    if int(pruning_frequency) != pruning_frequency or pruning_frequency < 1:
      raise ValueError(f"pruning_frequency must be a positive integer, got "
                       f"{pruning_frequency!r}.")
    if final_sparsity is None:
      sparse_rows = [r for r in result.layers if r.density < 1.0]
      params = sum(r.params for r in sparse_rows)
      final_sparsity = 1.0 - sum(r.params * r.density for r in sparse_rows) / params \
          if params else 0.0
    if not 0.0 <= initial_sparsity <= 1.0 or not 0.0 <= final_sparsity <= 1.0:
      raise ValueError("initial_sparsity and final_sparsity must be in [0, 1].")
    if final_sparsity == 0.0:
      per_example = 3 * f_dense * steps
    else:
      # FLOPs are linear in each layer's density, so f(t) = f_D - (f_D - f_S)
      # * s(t) / s_final: only the sum of s(t) over the run is needed.
      total = _pruning_sparsity_sum(steps, begin, end, int(pruning_frequency),
                                    float(initial_sparsity), float(final_sparsity))
      per_example = 3 * (f_dense * steps - (f_dense - f_sparse) * total / final_sparsity)
  return float(per_example * batch_size)
