"""ResNet-50 v1.5 as in the authors' TPU ResNet-50.

v1.5: the stride of a downsampling bottleneck sits in its 3x3 conv, not in the
first 1x1. Strided convs pad explicitly ((k - 1) // 2 before, the rest after)
and then run 'valid', like the TPU code's ``conv2d_fixed_padding``. Every conv
has no bias and is followed by BN; the last BN of each block starts with
gamma = 0 so that each residual block starts as the identity.
"""

from keras_rigl._keras import keras
from keras_rigl.models._common import (batch_norm, check_input_shape,
                                       check_num_classes, fixed_padding)

layers = keras.layers

# (filters of the bottleneck, number of blocks, stride of the first block).
_RESNET50_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))


def _conv(x, filters, kernel_size, strides, name):
  if strides > 1 and kernel_size > 1:
    x = fixed_padding(x, kernel_size, name=f"{name}_pad")
    padding = "valid"
  else:
    padding = "same"
  return layers.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                       use_bias=False, kernel_initializer="he_normal",
                       name=name)(x)


def _bottleneck(x, filters, strides, prefix, bn):
  """1x1 -> 3x3 (strided) -> 1x1 x4, with a projection when shapes change."""
  shortcut = x
  if strides != 1 or x.shape[-1] != 4 * filters:
    shortcut = _conv(x, 4 * filters, 1, strides, f"res{prefix}_branch1")
    shortcut = batch_norm(shortcut, f"bn{prefix}_branch1", **bn)
  y = _conv(x, filters, 1, 1, f"res{prefix}_branch2a")
  y = batch_norm(y, f"bn{prefix}_branch2a", **bn)
  y = layers.ReLU(name=f"res{prefix}_branch2a_relu")(y)
  y = _conv(y, filters, 3, strides, f"res{prefix}_branch2b")
  y = batch_norm(y, f"bn{prefix}_branch2b", **bn)
  y = layers.ReLU(name=f"res{prefix}_branch2b_relu")(y)
  y = _conv(y, 4 * filters, 1, 1, f"res{prefix}_branch2c")
  y = batch_norm(y, f"bn{prefix}_branch2c", gamma_initializer="zeros", **bn)
  y = layers.Add(name=f"res{prefix}_add")([y, shortcut])
  return layers.ReLU(name=f"res{prefix}_relu")(y)


def resnet50(input_shape=(224, 224, 3), num_classes=1000, bn_momentum=0.9,
             bn_epsilon=1e-5, name="resnet50"):
  """ResNet-50 v1.5 for ImageNet, the model of the paper's main results.

  53 convolutions and one Dense layer carry kernels: 25,502,912 kernel
  weights for 1000 classes (25.5 M); dense inference costs about 8.2e9 FLOPs
  per 224x224 image (see `keras_rigl.count_flops`). Layer names follow the
  Keras ResNet-50 the authors counted FLOPs on: ``conv1``,
  ``res{stage}{block}_branch{2a,2b,2c,1}``, ``bn...``, with the classifier
  called ``logits`` (the authors' ``fc1000``). No regularizers, no softmax.

  Args:
    input_shape: (height, width, channels) of one image.
    num_classes: width of the ``logits`` Dense layer (with bias).
    bn_momentum: BatchNormalization momentum (the TPU code's decay 0.9).
    bn_epsilon: BatchNormalization epsilon.
    name: name of the model.

  Returns:
    A Functional `keras.Model`.

  Example:
  >>> model = resnet50(num_classes=10)
  >>> model.get_layer("res3a_branch2b").strides   # v1.5: stride in the 3x3
  (2, 2)
  >>> model.output_shape
  (None, 10)
  """
  input_shape = check_input_shape(input_shape, 3, "resnet50")
  num_classes = check_num_classes(num_classes)
  bn = dict(momentum=bn_momentum, epsilon=bn_epsilon)
  inputs = keras.Input(shape=input_shape, name="input")
  x = _conv(inputs, 64, 7, 2, "conv1")
  x = batch_norm(x, "bn_conv1", **bn)
  x = layers.ReLU(name="conv1_relu")(x)
  x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
  for stage, (filters, blocks, strides) in enumerate(_RESNET50_STAGES, start=2):
    for block in range(blocks):
      x = _bottleneck(x, filters, strides if block == 0 else 1,
                      f"{stage}{'abcdefghijklmnopqrstuvwxyz'[block]}", bn)
  x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
  outputs = layers.Dense(
      num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
      name="logits")(x)
  return keras.Model(inputs, outputs, name=name)
