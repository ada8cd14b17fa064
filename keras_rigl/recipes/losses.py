"""Cross entropy of integer labels and logits with label smoothing.

Example:
>>> import tensorflow as tf
>>> from keras_rigl.recipes.losses import SparseCrossEntropy
>>> loss = SparseCrossEntropy(label_smoothing=0.1)
>>> round(float(loss(tf.constant([0]), tf.constant([[2.0, 0.0]]))), 4)
0.2269
"""

import numbers

from keras_rigl.backend import tf

from keras_rigl import backend
from keras_rigl._keras import keras


@keras.utils.register_keras_serializable(package="keras_rigl")
class SparseCrossEntropy(keras.losses.Loss):
  """Cross entropy of integer labels and logits, with label smoothing.

  Computed in float32 whatever the logits' dtype (mixed precision). With
  smoothing ``a`` the target is ``(1 - a) * one_hot + a / num_classes``, as
  ``tf.losses.softmax_cross_entropy(label_smoothing=a)`` in the authors' code.

  Example:
  >>> loss = SparseCrossEntropy(label_smoothing=0.1)
  >>> float(loss(tf.constant([0]), tf.constant([[2.0, 0.0]]))) > 0
  True
  """

  def __init__(self, label_smoothing=0.0, name="cross_entropy", **kwargs):
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real) \
        or not 0.0 <= label_smoothing < 1.0:
      raise ValueError(f"SparseCrossEntropy label_smoothing must be a number in [0, 1), "
                       f"got {label_smoothing!r}; e.g. 0.1 (0: none).")
    super().__init__(name=name, **kwargs)
    self.label_smoothing = float(label_smoothing)

  def call(self, y_true, y_pred):
    if not backend.IS_TENSORFLOW:  # JAX / PyTorch: the same in keras.ops.
      ops = keras.ops
      logits = ops.cast(y_pred, "float32")
      labels = ops.cast(ops.reshape(y_true, [-1]), "int32")
      if not self.label_smoothing:
        return ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
      classes = ops.shape(logits)[-1]
      target = ops.one_hot(labels, classes) * (1.0 - self.label_smoothing)
      target = target + self.label_smoothing / classes
      return ops.categorical_crossentropy(target, logits, from_logits=True)
    logits = tf.cast(y_pred, tf.float32)
    labels = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
    if not self.label_smoothing:
      return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    classes = tf.shape(logits)[-1]
    target = tf.one_hot(labels, classes) * (1.0 - self.label_smoothing)
    target += self.label_smoothing / tf.cast(classes, tf.float32)
    return tf.nn.softmax_cross_entropy_with_logits(target, logits)

  def get_config(self):
    config = super().get_config()
    config["label_smoothing"] = self.label_smoothing
    return config
