"""The small MNIST networks of the paper: LeNet-300-100 and LeNet-5 (Caffe)."""

from keras_rigl._keras import keras
from keras_rigl.models._common import check_input_shape, check_num_classes

layers = keras.layers


def lenet300_100(input_shape=(28, 28, 1), num_classes=10, name="lenet300_100"):
  """LeNet-300-100: Flatten, Dense 300 ReLU, Dense 100 ReLU, Dense logits.

  The fully connected MNIST network of the RigL paper (266,200 kernel weights
  for 28x28 inputs). The output layer has no softmax: train with
  ``from_logits=True``.

  Args:
    input_shape: shape of one example, flattened by the first layer.
    num_classes: width of the logits layer.
    name: name of the model.

  Returns:
    A Functional `keras.Model` with layers ``fc1``, ``fc2``, ``logits``.

  Example:
  >>> model = lenet300_100()
  >>> model.output_shape
  (None, 10)
  >>> [layer.name for layer in model.layers[-3:]]
  ['fc1', 'fc2', 'logits']
  """
  num_classes = check_num_classes(num_classes)
  inputs = keras.Input(shape=tuple(input_shape), name="input")
  x = layers.Flatten(name="flatten")(inputs)
  x = layers.Dense(300, activation="relu", name="fc1")(x)
  x = layers.Dense(100, activation="relu", name="fc2")(x)
  outputs = layers.Dense(num_classes, name="logits")(x)
  return keras.Model(inputs, outputs, name=name)


def lenet5(input_shape=(28, 28, 1), num_classes=10, name="lenet5"):
  """LeNet-5 in its Caffe form, the variant used by the sparsity literature.

  conv 20 5x5 + 2x2 max-pool, conv 50 5x5 + 2x2 max-pool, Dense 500 ReLU,
  Dense logits (430,500 kernel weights for 28x28 inputs). Convolutions use
  'valid' padding and ReLU; the output has no softmax.

  Args:
    input_shape: (height, width, channels) of one image.
    num_classes: width of the logits layer.
    name: name of the model.

  Returns:
    A Functional `keras.Model` with layers ``conv1``, ``pool1``, ``conv2``,
    ``pool2``, ``flatten``, ``fc1``, ``logits``.

  Example:
  >>> model = lenet5()
  >>> tuple(model.get_layer("conv2").kernel.shape)
  (5, 5, 20, 50)
  """
  input_shape = check_input_shape(input_shape, 3, "lenet5")
  num_classes = check_num_classes(num_classes)
  inputs = keras.Input(shape=input_shape, name="input")
  x = layers.Conv2D(20, 5, activation="relu", name="conv1")(inputs)
  x = layers.MaxPooling2D(2, name="pool1")(x)
  x = layers.Conv2D(50, 5, activation="relu", name="conv2")(x)
  x = layers.MaxPooling2D(2, name="pool2")(x)
  x = layers.Flatten(name="flatten")(x)
  x = layers.Dense(500, activation="relu", name="fc1")(x)
  outputs = layers.Dense(num_classes, name="logits")(x)
  return keras.Model(inputs, outputs, name=name)
