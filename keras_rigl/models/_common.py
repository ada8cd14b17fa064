"""Small helpers shared by the reference architectures."""

from keras_rigl._keras import keras

layers = keras.layers


def check_input_shape(input_shape, rank, what):
  """Returns `input_shape` as a tuple after checking its length."""
  shape = tuple(input_shape)
  if len(shape) != rank:
    raise ValueError(
        f"{what} expects input_shape with {rank} dims (e.g. height, width, "
        f"channels), got {input_shape!r}.")
  return shape


def check_num_classes(num_classes):
  """Returns `num_classes` as an int >= 1."""
  if int(num_classes) != num_classes or num_classes < 1:
    raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
  return int(num_classes)


def make_divisible(value, divisor=8, min_value=None):
  """Rounds a channel count to a multiple of `divisor` (MobileNet rule).

  Never goes below `min_value` (default `divisor`) nor more than 10% below
  `value`, exactly as in the authors' MobileNet code.

  Example:
  >>> make_divisible(32 * 0.75)
  24
  """
  min_value = divisor if min_value is None else min_value
  rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
  if rounded < 0.9 * value:
    rounded += divisor
  return rounded


def fixed_padding(x, kernel_size, name):
  """Pads like the authors' TPU models: (k - 1) // 2 before, the rest after.

  A strided conv then runs with 'valid' padding, so its output does not depend
  on whether the input size is even (unlike TF 'same' padding).
  """
  total = kernel_size - 1
  begin = total // 2
  return layers.ZeroPadding2D(((begin, total - begin), (begin, total - begin)),
                              name=name)(x)


def batch_norm(x, name, momentum, epsilon, gamma_initializer="ones"):
  """BatchNormalization over the channel (last) axis."""
  return layers.BatchNormalization(
      axis=-1, momentum=momentum, epsilon=epsilon,
      gamma_initializer=gamma_initializer, name=name)(x)
