"""Model size in bytes for inference (`model_size_bytes`): non-zero values plus a
1-bit mask per sparse kernel, the authors' count.
"""

import math

from keras_rigl.flops.reading import (_Densities, _L, _SEQUENCE_KINDS, _check_model,
                                      _find_mask, _fraction_nonzero, _is_sparse_wrapper,
                                      _kernels, _kind, _masks_of, _size, _walk)


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
