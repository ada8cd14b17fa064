"""MobileNet v1 and v2 as in the authors' ImageNet code.

Both start with a strided 3x3 conv, pad strided convs explicitly and run them
'valid' (like the TPU code), use convs without bias followed by BN, and end
with global average pooling and a Dense ``logits`` layer with bias. Channel
counts are scaled by `width` and rounded with the authors' `make_divisible`.
"""

from keras_rigl._keras import keras
from keras_rigl.models._common import (batch_norm, check_input_shape,
                                       check_num_classes, fixed_padding,
                                       make_divisible)

layers = keras.layers

# (pointwise filters, stride) of the 13 depthwise-separable blocks.
_V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
              (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2),
              (1024, 1))
# (output filters, stride) of the 17 inverted residual blocks.
_V2_BLOCKS = ((16, 1), (24, 2), (24, 1), (32, 2), (32, 1), (32, 1), (64, 2),
              (64, 1), (64, 1), (64, 1), (96, 1), (96, 1), (96, 1), (160, 2),
              (160, 1), (160, 1), (320, 1))


def _check_width(width):
  if not width > 0:
    raise ValueError(f"width must be positive, got {width!r}.")
  return float(width)


def _stem(inputs, filters, bn, activation):
  x = fixed_padding(inputs, 3, name="conv1_pad")
  x = layers.Conv2D(filters, 3, strides=2, padding="valid", use_bias=False,
                    kernel_initializer="he_normal", name="conv1")(x)
  x = batch_norm(x, "conv1_bn", **bn)
  return activation("conv1_relu")(x)


def _depthwise(x, strides, prefix, bn, activation):
  if strides > 1:
    x = fixed_padding(x, 3, name=f"{prefix}_pad")
  x = layers.DepthwiseConv2D(3, strides=strides,
                             padding="valid" if strides > 1 else "same",
                             use_bias=False, name=f"{prefix}_depthwise")(x)
  x = batch_norm(x, f"{prefix}_depthwise_bn", **bn)
  return activation(f"{prefix}_depthwise_relu")(x)


def _pointwise(x, filters, name, bn, activation=None):
  x = layers.Conv2D(filters, 1, use_bias=False, kernel_initializer="he_normal",
                    name=name)(x)
  x = batch_norm(x, f"{name}_bn", **bn)
  return activation(f"{name}_relu")(x) if activation else x


def _head(x, num_classes):
  x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
  return layers.Dense(num_classes, name="logits")(x)


def mobilenet_v1(width=1.0, input_shape=(224, 224, 3), num_classes=1000,
                 bn_momentum=0.9, bn_epsilon=1e-5, name="mobilenet_v1"):
  """MobileNet v1 (Howard et al. 2017) as trained in the RigL paper.

  conv1 (3x3, 32 filters, stride 2), then 13 depthwise-separable blocks, each
  a 3x3 DepthwiseConv2D + BN + ReLU and a 1x1 Conv2D + BN + ReLU, then global
  average pooling and a Dense 1024 -> `num_classes` layer with bias. About 4.2 M
  weights and 569 M multiply-adds at width 1.0. The paper keeps ``conv1`` and
  the depthwise kernels dense and sparsifies the pointwise convs and logits.

  Args:
    width: channel multiplier (the authors round with `make_divisible`).
    input_shape: (height, width, channels) of one image.
    num_classes: width of the ``logits`` layer.
    bn_momentum: BatchNormalization momentum.
    bn_epsilon: BatchNormalization epsilon.
    name: name of the model.

  Returns:
    A Functional `keras.Model` with layers ``conv1``, ``block{i}_depthwise``,
    ``block{i}_pointwise`` (i = 1..13, each with ``_bn``/``_relu``) and
    ``logits``.

  Example:
  >>> model = mobilenet_v1()
  >>> tuple(model.get_layer("block13_pointwise").kernel.shape)
  (1, 1, 1024, 1024)
  """
  width = _check_width(width)
  input_shape = check_input_shape(input_shape, 3, "mobilenet_v1")
  num_classes = check_num_classes(num_classes)
  bn = dict(momentum=bn_momentum, epsilon=bn_epsilon)
  relu = lambda n: layers.ReLU(name=n)
  inputs = keras.Input(shape=input_shape, name="input")
  x = _stem(inputs, make_divisible(32 * width), bn, relu)
  for index, (filters, strides) in enumerate(_V1_BLOCKS, start=1):
    prefix = f"block{index}"
    x = _depthwise(x, strides, prefix, bn, relu)
    # The authors round the first block to a multiple of 1, the others of 8.
    filters = make_divisible(int(width * filters), 1 if index == 1 else 8)
    x = _pointwise(x, filters, f"{prefix}_pointwise", bn, relu)
  return keras.Model(inputs, _head(x, num_classes), name=name)


def mobilenet_v2(width=1.0, input_shape=(224, 224, 3), num_classes=1000,
                 expansion=6, activation="relu", bn_momentum=0.9,
                 bn_epsilon=1e-5, name="mobilenet_v2"):
  """MobileNet v2 (Sandler et al. 2018) as trained in the RigL paper.

  conv1 (3x3, 32 filters, stride 2), 17 inverted residual blocks (1x1
  expansion by `expansion` except in the first block, 3x3 depthwise, linear
  1x1 projection, identity shortcut when shapes match), a 1x1 conv to 1280
  channels, global average pooling and a Dense ``logits`` layer with bias.
  About 3.5 M weights at width 1.0. The authors use ReLU; pass
  ``activation="relu6"`` for the original paper's ReLU6.

  Args:
    width: channel multiplier (the authors round with `make_divisible`).
    input_shape: (height, width, channels) of one image.
    num_classes: width of the ``logits`` layer.
    expansion: expansion factor of the inverted residual blocks.
    activation: "relu" (the authors') or "relu6".
    bn_momentum: BatchNormalization momentum.
    bn_epsilon: BatchNormalization epsilon.
    name: name of the model.

  Returns:
    A Functional `keras.Model` with layers ``conv1``, ``block{i}_expand``
    (i >= 2), ``block{i}_depthwise``, ``block{i}_project`` (i = 1..17),
    ``conv_last`` and ``logits``.

  Example:
  >>> model = mobilenet_v2()
  >>> tuple(model.get_layer("conv_last").kernel.shape)
  (1, 1, 320, 1280)
  """
  width = _check_width(width)
  input_shape = check_input_shape(input_shape, 3, "mobilenet_v2")
  num_classes = check_num_classes(num_classes)
  if activation not in ("relu", "relu6"):
    raise ValueError(f"activation must be 'relu' or 'relu6', got {activation!r}.")
  max_value = 6.0 if activation == "relu6" else None
  act = lambda n: layers.ReLU(max_value=max_value, name=n)
  bn = dict(momentum=bn_momentum, epsilon=bn_epsilon)
  inputs = keras.Input(shape=input_shape, name="input")
  x = _stem(inputs, make_divisible(32 * width), bn, act)
  for index, (filters, strides) in enumerate(_V2_BLOCKS, start=1):
    prefix = f"block{index}"
    shortcut = x
    in_channels = x.shape[-1]
    if index > 1:
      x = _pointwise(x, int(expansion * in_channels), f"{prefix}_expand", bn, act)
    x = _depthwise(x, strides, prefix, bn, act)
    filters = make_divisible(int(width * filters), 1 if index == 1 else 8)
    x = _pointwise(x, filters, f"{prefix}_project", bn)  # Linear bottleneck.
    if strides == 1 and in_channels == filters:
      x = layers.Add(name=f"{prefix}_add")([x, shortcut])
  x = _pointwise(x, max(1280, make_divisible(1280 * width, 8)), "conv_last", bn, act)
  return keras.Model(inputs, _head(x, num_classes), name=name)
