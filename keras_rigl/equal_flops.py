"""Equal-FLOPs comparisons: the overall sparsity at which a distribution costs a given FLOPs ratio.

Comparing sparsity distributions at equal *parameters* favours ERK, which puts
more weights where they cost more FLOPs (convolutions on large feature maps);
the reproducibility literature also compares them at equal *inference FLOPs*.
`sparsity_for_flops` finds, by bisection over `count_flops`, the overall
sparsity at which a distribution reaches a target FLOPs ratio.
"""

from keras_rigl.distributions import DISTRIBUTIONS, layer_sparsities
from keras_rigl.flops import count_flops, kernel_shapes
from keras_rigl.walk import walk_layers

_STEPS = 60  # Bisection steps: far below float precision of any useful ratio.
_HIGHEST = 1.0 - 1e-9  # Sparsity must stay below 1.


def _check_ratio(flops_ratio):
  if isinstance(flops_ratio, bool) or not isinstance(flops_ratio, (int, float)):
    raise TypeError(f"flops_ratio must be a number in (0, 1], got {flops_ratio!r}; "
                    "e.g. 0.25 for a quarter of the dense model's FLOPs.")
  if not 0.0 < flops_ratio <= 1.0:
    raise ValueError(f"flops_ratio must be in (0, 1] (sparse FLOPs / dense FLOPs), got "
                     f"{flops_ratio!r}; e.g. 0.25 for a quarter of the dense FLOPs.")
  return float(flops_ratio)


def _excluded_names(model, shapes, exclude):
  """Keys of `shapes` whose layer `exclude` (names or a predicate) leaves dense."""
  if exclude is None:
    return set()
  layer_of = lambda key: key.split("/")[0]
  if callable(exclude):
    layers = {layer.name: layer for layer in walk_layers(model)}
    return {key for key in shapes
            if layer_of(key) in layers and exclude(layers[layer_of(key)])}
  names = {exclude} if isinstance(exclude, str) else set(exclude)
  unknown = sorted(names - {layer_of(key) for key in shapes})
  if unknown:
    raise ValueError(f"exclude names {unknown}, which are not kernel layers of the "
                     f"model; use names among {sorted({layer_of(k) for k in shapes})}.")
  return {key for key in shapes if layer_of(key) in names}


def sparsity_for_flops(model, flops_ratio, distribution="erk", erk_power_scale=1.0,
                       custom_sparsity=None, exclude=None):
  """Overall sparsity at which `distribution` costs `flops_ratio` of the dense FLOPs.

  The model's kernel layers (those `count_flops` counts) get per-layer
  sparsities from `layer_sparsities(shapes, s, distribution, ...)`; this
  returns the `s` whose inference FLOPs (`count_flops(...).ratio`, the paper's
  counting) equal `flops_ratio`, found by bisection (the ratio only falls as
  `s` grows). Pass the result to `sparsify` with the same arguments to build
  the model.

  Args:
    model: a built Sequential or Functional model (usually the dense one).
    flops_ratio: target sparse / dense inference FLOPs, in (0, 1].
    distribution: "uniform", "er" or "erk".
    erk_power_scale, custom_sparsity: as for `sparsify`.
    exclude: layer names, or a predicate on the layer, left dense (as for
      `sparsify`; they still cost their dense FLOPs).

  Returns:
    The overall sparsity, a float in [0, 1).

  Raises:
    ValueError: the target cannot be reached (even at sparsity close to 1 the
      dense layers cost more), or a bad argument.

  Example:
  >>> import keras_rigl as kr
  >>> model = kr.models.lenet5()
  >>> s_uniform = kr.sparsity_for_flops(model, 0.2, "uniform")
  >>> s_erk = kr.sparsity_for_flops(model, 0.2, "erk")
  >>> round(s_uniform, 3), round(s_erk, 3)   # ERK needs more zeros for the same FLOPs
  (0.803, 0.908)
  >>> shapes = kr.flops.kernel_shapes(model)
  >>> per_layer = kr.layer_sparsities(shapes, s_erk, "erk")
  >>> round(kr.count_flops(model, sparsities=per_layer).ratio, 4)
  0.2
  """
  flops_ratio = _check_ratio(flops_ratio)
  if distribution not in DISTRIBUTIONS:
    raise ValueError(f"Unknown distribution {distribution!r}; use one of {DISTRIBUTIONS}.")
  shapes = kernel_shapes(model)
  if not shapes:
    raise ValueError("sparsity_for_flops: the model has no Dense/Conv kernel layers, so "
                     "its FLOPs do not depend on sparsity.")
  excluded = _excluded_names(model, shapes, exclude)
  shapes = {key: shape for key, shape in shapes.items() if key not in excluded}

  def ratio_at(sparsity):
    per_layer = layer_sparsities(shapes, sparsity, distribution, erk_power_scale,
                                 custom_sparsity)
    return count_flops(model, sparsities=per_layer).ratio

  if ratio_at(0.0) <= flops_ratio:
    return 0.0
  lowest = ratio_at(_HIGHEST)
  if lowest > flops_ratio:
    raise ValueError(
        f"flops_ratio={flops_ratio} cannot be reached with distribution={distribution!r}: "
        f"even at sparsity ~1 the model costs {lowest:.4f} of its dense FLOPs (dense, "
        "excluded or custom layers, biases and activations). Ask for a ratio above "
        f"{lowest:.4f}, or exclude fewer layers.")
  low, high = 0.0, _HIGHEST  # ratio_at(low) > target >= ratio_at(high)
  for _ in range(_STEPS):
    middle = (low + high) / 2
    if ratio_at(middle) > flops_ratio:
      low = middle
    else:
      high = middle
  return high
