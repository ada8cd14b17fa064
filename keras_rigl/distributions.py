"""Per-layer sparsities: uniform, Erdos-Renyi (ER) and Erdos-Renyi-Kernel (ERK).

Pure numpy. Semantics follow DESIGN.md section 2 (the authors' reference):
ER/ERK give each layer a raw density, one global factor scales them so that the
total number of non-zeros equals what uniform sparsity would keep, and any
layer that would come out denser than 1 is made dense and the factor solved
again. Layers named in ``custom_sparsity`` keep their value and take no part in
the scaling.
"""

import math

import numpy as np

DISTRIBUTIONS = ("uniform", "er", "erk")


def check_sparsity(sparsity, what="sparsity"):
  """Raises ValueError unless 0 <= sparsity < 1."""
  try:
    value = float(sparsity)
  except (TypeError, ValueError):
    raise ValueError(f"{what} must be a number in [0, 1), got {sparsity!r}.") from None
  if not 0.0 <= value < 1.0 or math.isnan(value):
    raise ValueError(
        f"{what} must be in [0, 1) (the fraction of weights that are zero), got "
        f"{sparsity!r}. Use e.g. 0.9 for 90% sparse; 1.0 would remove every weight.")
  return value


def check_seed(seed, what="seed"):
  """Raises TypeError unless `seed` is an integer (bool excluded)."""
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise TypeError(f"{what} must be an integer (it seeds the stateless mask "
                    f"generator), got {seed!r}. Pass e.g. {what}=0.")
  return int(seed)


def _check_shape(name, shape):
  """`shape` as a tuple of ints, or ValueError naming the weight."""
  try:
    dims = tuple(shape)
  except TypeError:
    dims = None
  if dims is None or isinstance(shape, (str, bytes)) or not all(
      isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in dims):
    raise ValueError(f"The shape of weight {name!r} must be a tuple of integers, got "
                     f"{shape!r}; e.g. {{'fc1': (784, 300)}}.")
  return tuple(int(d) for d in dims)


def num_zeros(size, sparsity):
  """Zeros a layer of `size` weights holds at `sparsity`: floor(s * N)."""
  return int(math.floor(sparsity * size))


def _raw_density(shape, distribution, erk_power_scale):
  if distribution == "er":
    n_in, n_out = (shape[-2], shape[-1]) if len(shape) >= 2 else (1, shape[-1])
    raw = (n_in + n_out) / (n_in * n_out)
  else:
    raw = np.sum(shape) / np.prod(shape)
  return float(raw) ** erk_power_scale


def layer_sparsities(shapes, sparsity, distribution="erk", erk_power_scale=1.0,
                     custom_sparsity=None):
  """Sparsity of each layer so that the whole network is `sparsity` sparse.

  Args:
    shapes: dict {name: shape} of the weights to sparsify (e.g. kernels).
    sparsity: target fraction of zeros over the non-custom layers, in [0, 1).
    distribution: "uniform" (every layer `sparsity`), "er" (Erdos-Renyi: raw
      density (n_in + n_out) / (n_in * n_out) of the last two dims) or "erk"
      (Erdos-Renyi-Kernel: sum(shape) / prod(shape)).
    erk_power_scale: exponent applied to the ER/ERK raw densities (1.0 in the
      paper; 0 gives uniform).
    custom_sparsity: optional dict {name: sparsity} of layers that keep the
      given value (e.g. ``{"conv1": 0.0}`` to keep the first layer dense).

  Returns:
    dict {name: sparsity} with the same keys as `shapes`.

  Example:
  >>> s = layer_sparsities({"fc1": (784, 300), "fc2": (300, 100),
  ...                       "fc3": (100, 10)}, 0.9, "erk")
  >>> round(s["fc3"], 3)
  0.0
  """
  if not isinstance(shapes, dict):
    raise TypeError(
        f"shapes must be a dict {{name: shape}}, got {type(shapes).__name__}. "
        "Name each weight, e.g. layer_sparsities({'fc1': (784, 300)}, 0.9).")
  sparsity = check_sparsity(sparsity)
  if distribution not in DISTRIBUTIONS:
    raise ValueError(f"Unknown distribution {distribution!r}; use one of {DISTRIBUTIONS}.")
  if isinstance(erk_power_scale, (bool, str, bytes)) or not isinstance(
      erk_power_scale, (int, float, np.integer, np.floating)) or not erk_power_scale >= 0:
    raise ValueError(f"erk_power_scale must be >= 0 (a number), got {erk_power_scale!r}; "
                     "e.g. erk_power_scale=1.0 (the paper's ERK).")
  shapes = {name: _check_shape(name, shape) for name, shape in shapes.items()}
  for name, shape in shapes.items():
    if not shape or min(shape) <= 0:
      raise ValueError(f"Weight {name!r} has an empty shape {shape}; nothing to sparsify.")
  custom_sparsity = dict(custom_sparsity or {})
  unknown = sorted(set(custom_sparsity) - set(shapes))
  if unknown:
    raise ValueError(
        f"custom_sparsity names {unknown}, which are not among the layers "
        f"{sorted(shapes)}. Check the spelling of the layer names.")
  for name, value in custom_sparsity.items():
    custom_sparsity[name] = check_sparsity(value, f"custom_sparsity[{name!r}]")

  result = dict(custom_sparsity)
  scaled = [name for name in shapes if name not in custom_sparsity]
  if distribution == "uniform" or sparsity == 0.0:
    result.update({name: sparsity for name in scaled})
    return {name: result[name] for name in shapes}

  size = {name: int(np.prod(shapes[name])) for name in scaled}
  raw = {name: _raw_density(shapes[name], distribution, erk_power_scale)
         for name in scaled}
  # Non-zeros uniform sparsity would keep: the budget ER/ERK must match.
  budget = sum(size[n] - num_zeros(size[n], sparsity) for n in scaled)
  dense = set()
  while True:
    free = [n for n in scaled if n not in dense]
    if not free:
      break
    remaining = budget - sum(size[n] for n in dense)
    factor = remaining / sum(raw[n] * size[n] for n in free)
    densest = max(raw[n] for n in free)
    if factor * densest <= 1.0:
      break
    # Those layers would need density > 1: make them dense and solve again.
    dense.update(n for n in free if raw[n] == densest)
  for name in scaled:
    result[name] = 0.0 if name in dense else 1.0 - factor * raw[name]
  return {name: result[name] for name in shapes}
