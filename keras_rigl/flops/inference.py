"""Inference FLOPs per example (`count_flops`) and the kernel shapes it counts
(`kernel_shapes`), by the rules in the package docstring.
"""

import numpy as np

from keras_rigl import layer_registry

from keras_rigl.flops.reading import (_Densities, _L, _SEQUENCE_KINDS, _calls,
                                      _check_known, _check_model, _einsum_fan_in,
                                      _fill_time, _is_sparse_wrapper, _kernels, _kind,
                                      _masks_of, _size, _spatial, _walk)
from keras_rigl.flops.records import FlopsCount, LayerFlops
from keras_rigl.flops.sequence import _sequence_row


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
  >>> from keras_rigl._keras import keras
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


def _owners(layer):
  """{id(variable): the (sub)layer holding it} for a registered layer's kernels."""
  layer_type = None if hasattr(layer, "compressed_weights") else layer_registry.counted(layer)
  return {} if layer_type is None else {
      id(variable): owner for _, owner, variable in layer_type.weights(layer)}


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
    # As sparsify's ER/ERK see them (an EinsumDense kernel as its matrix).
    owners = _owners(inner)
    for key, variable in kernels:
      shape = layer_registry.matrix_shape(owners.get(id(variable)), variable)
      shapes[f"{name}/{key}" if len(kernels) > 1 else name] = shape
  return shapes
