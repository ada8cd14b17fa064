"""The small-dense baseline: a narrower dense model with the sparse one's size.

Example:
>>> from keras_rigl.recipes import configs
>>> from keras_rigl.recipes.small_dense import small_dense_width
>>> config = configs.get_config("fashion_mnist_lenet300_100")
>>> round(small_dense_width(config, (28, 28, 1), 10), 2)
0.11
"""

from keras_rigl import flops as _flops
from keras_rigl import surgery as _surgery
from keras_rigl._keras import keras
from keras_rigl.recipes.builders import build_model
from keras_rigl.recipes.builders import sparsify_kwargs
from keras_rigl.recipes.regularization import rebuild


def small_dense_width(config, input_shape, num_classes, seed=0):
  """Width factor whose dense model has the sparse model's kernel-weight count.

  The target is the number of non-zero kernel weights that `kr.sparsify`
  gives the full model (dense layers included); the factor is found by
  bisection (kernel weights grow with width, roughly quadratically).
  """
  from keras_rigl.recipes.configs import Config  # pylint: disable=g-import-not-at-top
  if not isinstance(config, Config):
    raise TypeError(f"small_dense_width needs a recipes Config, got "
                    f"{type(config).__name__}; e.g. recipes.get_config("
                    "'fashion_mnist_lenet300_100').")
  keras.utils.set_random_seed(seed)
  full = build_model(config.model, input_shape, num_classes)
  sparse = _surgery.sparsify(full, config.sparsity, seed=seed,
                             **sparsify_kwargs(config, full))
  target = _flops.count_flops(sparse).nnz
  del sparse

  def params(width):
    return _flops.count_flops(rebuild(full, width=width)).params

  low, high = 0.0, 1.0
  for _ in range(14):
    middle = (low + high) / 2
    if params(middle) > target:
      high = middle
    else:
      low = middle
  candidates = [w for w in (low, high) if w > 0]
  return min(candidates, key=lambda w: abs(params(w) - target))
