"""CIFAR-10 from tensorflow-datasets, with the standard augmentation.

Training: zero-pad 4 pixels on each side, random 32x32 crop, random
horizontal flip. Both splits: scale to [0, 1] and normalise each channel
with the training set's mean and standard deviation.
"""

from __future__ import annotations  # tf.data types in annotations: TensorFlow loads lazily.

from typing import Optional

from keras_rigl.backend import tf

from keras_rigl.data import common

INFO = common.DatasetInfo(
    name="cifar10", num_classes=10, input_shape=(32, 32, 3),
    num_train=50000, num_eval=10000, tfds_name="cifar10",
    eval_split="test", shuffle_buffer=10000)

# Per-channel statistics of the 50k training images, pixels in [0, 1].
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
PAD = 4

MISSING_HELP = (
    "Prepare it with tfds on a machine with internet access (`tfds build "
    "cifar10 --data_dir=DIR`, or `tfds.builder('cifar10', "
    "data_dir=DIR).download_and_prepare()`) and pass `--data_dir=DIR`.")


def source(split: str, data_dir: Optional[str], training: bool,
           seed: int) -> tf.data.Dataset:
  """Raw `(uint8 image (32, 32, 3), label)` records from tfds (no download).

  Example:

  >>> import tensorflow_datasets as tfds
  >>> with tfds.testing.mock_data(num_examples=2):
  ...   ds = source("test", None, training=False, seed=0)
  >>> ds.element_spec[0].shape
  TensorShape([32, 32, 3])
  """
  return common.tfds_source(INFO, split, data_dir, training, seed,
                            MISSING_HELP)


def _normalize(image):
  image = tf.cast(image, tf.float32) / 255.0
  return (image - tf.constant(MEAN)) / tf.constant(STD)


def preprocess_train(image, label, seed):
  """Pad 4 + random 32x32 crop + random flip, then normalise.

  The padding is black (zeros in pixel space), as in the usual CIFAR
  recipes, applied before normalisation.

  Example:

  >>> x, y = preprocess_train(tf.zeros([32, 32, 3], tf.uint8), 7, [1, 2])
  >>> tuple(x.shape), x.dtype.name, int(y)
  ((32, 32, 3), 'float32', 7)
  """
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(
      tf.cast(seed, tf.int64), 2))
  image = tf.pad(image, [[PAD, PAD], [PAD, PAD], [0, 0]])
  image = tf.image.stateless_random_crop(image, INFO.input_shape, crop_seed)
  image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return _normalize(image), tf.cast(label, tf.int32)


def preprocess_eval(image, label):
  """Normalise only.

  Example:

  >>> x, _ = preprocess_eval(tf.zeros([32, 32, 3], tf.uint8), 0)
  >>> round(float(x[0, 0, 0]), 3)  # (0 - mean) / std of the red channel
  -1.989
  """
  image = tf.ensure_shape(image, INFO.input_shape)
  return _normalize(image), tf.cast(label, tf.int32)
