"""Wide ResNet for CIFAR (Zagoruyko & Komodakis 2016), as in the authors' code.

Pre-activation blocks: BN-ReLU, 3x3 conv (strided in the first block of a
group), BN-ReLU, dropout, 3x3 conv, plus the shortcut. When the channel count
changes, the shortcut is a strided 1x1 conv of the pre-activated input.
"""

from keras_rigl._keras import keras
from keras_rigl.models._common import (batch_norm, check_input_shape,
                                       check_num_classes)

layers = keras.layers


def wide_resnet(depth=22, width=2, input_shape=(32, 32, 3), num_classes=10,
                dropout=0.3, bn_momentum=0.9, bn_epsilon=1e-5, name=None):
  """WRN-`depth`-`width`: 3 groups of (depth - 4) / 6 pre-activation blocks.

  Group widths are 16*width, 32*width and 64*width; the first conv has 16
  filters. Convolutions have no bias (each is followed by BN); the ``logits``
  layer is a Dense with bias and no softmax. No regularizers are attached:
  add weight decay in the optimizer or loss.

  Args:
    depth: total depth, 6n + 4 (22 in the paper: 3 blocks per group).
    width: widening factor k.
    input_shape: (height, width, channels) of one image.
    num_classes: width of the logits layer.
    dropout: dropout rate between the two convs of a block (the authors' 0.3).
    bn_momentum: BatchNormalization momentum (moving-average decay).
    bn_epsilon: BatchNormalization epsilon.
    name: model name; default ``wide_resnet{depth}_{width}``.

  Returns:
    A Functional `keras.Model`. Layer names: ``conv1``,
    ``group{g}_block{b}_{bn1,conv1,bn2,conv2,shortcut}``, ``final_bn``,
    ``logits``.

  Example:
  >>> model = wide_resnet(22, 2)
  >>> model.output_shape
  (None, 10)
  >>> model.get_layer("group2_block1_conv1").strides
  (2, 2)
  """
  if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
    raise ValueError(f"wide_resnet depth must be 6n + 4 with n >= 1 (10, 16, 22, "
                     f"28, ...), got {depth!r}.")
  if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
    raise ValueError(f"wide_resnet width must be positive, got {width!r}.")
  input_shape = check_input_shape(input_shape, 3, "wide_resnet")
  num_classes = check_num_classes(num_classes)
  blocks = (depth - 4) // 6
  bn = dict(momentum=bn_momentum, epsilon=bn_epsilon)
  conv = dict(use_bias=False, kernel_initializer="he_normal")

  inputs = keras.Input(shape=input_shape, name="input")
  x = layers.Conv2D(16, 3, padding="same", name="conv1", **conv)(inputs)
  for group, filters in enumerate((16 * width, 32 * width, 64 * width), start=1):
    filters = int(filters)
    for block in range(1, blocks + 1):
      prefix = f"group{group}_block{block}"
      strides = 2 if (group > 1 and block == 1) else 1
      shortcut = x
      x = batch_norm(x, f"{prefix}_bn1", **bn)
      x = layers.ReLU(name=f"{prefix}_relu1")(x)
      if x.shape[-1] != filters:
        # The authors project the pre-activated input, not the raw one.
        shortcut = layers.Conv2D(filters, 1, strides=strides, name=f"{prefix}_shortcut",
                                 **conv)(x)
      x = layers.Conv2D(filters, 3, strides=strides, padding="same",
                        name=f"{prefix}_conv1", **conv)(x)
      x = batch_norm(x, f"{prefix}_bn2", **bn)
      x = layers.ReLU(name=f"{prefix}_relu2")(x)
      if dropout:
        x = layers.Dropout(dropout, name=f"{prefix}_dropout")(x)
      x = layers.Conv2D(filters, 3, padding="same", name=f"{prefix}_conv2", **conv)(x)
      x = layers.Add(name=f"{prefix}_add")([x, shortcut])
  x = batch_norm(x, "final_bn", **bn)
  x = layers.ReLU(name="final_relu")(x)
  x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
  outputs = layers.Dense(num_classes, name="logits")(x)
  return keras.Model(inputs, outputs, name=name or f"wide_resnet{depth}_{width}")
