"""ImageNet (ILSVRC 2012): the standard ResNet input, from tfds or TFRecord shards.

Two on-disk forms are read: a prepared tensorflow-datasets copy, and the
TFRecord shards (``train-00000-of-01024`` ..., ``validation-...``, keys
``image/encoded`` / ``image/class/label``) that TensorFlow's TPU and official
ImageNet trainers read (`keras_rigl.data.imagenet_records`). A `data_dir`
holding such shards is read as shards; anything else as tfds.

Training: random resized crop (a box covering 8%-100% of the image with
aspect ratio in [3/4, 4/3], from `sample_distorted_bounding_box`), resized to
224x224, random horizontal flip. Eval: resize the shorter side to 256
(aspect ratio kept), centre crop 224x224. A smaller `image_size` (quick runs)
crops to that size directly, the eval resize scaled by the same 256/224. Both: subtract the ImageNet mean and
divide by its standard deviation (per channel, pixel scale 0-255).

JPEGs are kept encoded until after sharding and shuffling, and training
decodes only the crop window (`decode_and_crop_jpeg`), which is what keeps
ImageNet input fast enough for accelerators.

ImageNet cannot be downloaded by tfds; see `MISSING_HELP`.
"""

from __future__ import annotations  # tf.data types in annotations: TensorFlow loads lazily.

from typing import Optional

from keras_rigl.backend import tf

from keras_rigl.data import common
from keras_rigl.data import imagenet_records

INFO = common.DatasetInfo(
    name="imagenet2012", num_classes=1000, input_shape=(224, 224, 3),
    num_train=1281167, num_eval=50000, tfds_name="imagenet2012",
    eval_split="validation", shuffle_buffer=10000)

IMAGE_SIZE = 224
RESIZE_SIZE = 256  # shorter side before the eval centre crop
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)
AREA_RANGE = (0.08, 1.0)
ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
# The preprocessing crops to any `image_size` itself (see `loader.load`).
CROPS_TO_SIZE = True

MISSING_HELP = (
    "tfds cannot download ImageNet. Download ILSVRC2012_img_train.tar and "
    "ILSVRC2012_img_val.tar from https://image-net.org, put them in "
    "<data_dir>/downloads/manual/, prepare the dataset once with `tfds build "
    "imagenet2012 --data_dir=<data_dir>` (or `tfds.builder('imagenet2012', "
    "data_dir=<data_dir>).download_and_prepare()`), then pass "
    "`--data_dir=<data_dir>`. A folder of TFRecord shards in the TPU/official "
    "layout (train-00000-of-01024 ..., validation-00000-of-00128 ...) is read "
    "as it is; `examples/make_synthetic_imagenet.py` writes a small synthetic "
    "one.")


def source(split: str, data_dir: Optional[str], training: bool,
           seed: int) -> tf.data.Dataset:
  """Raw `(encoded JPEG string, label)` records: TFRecord shards or tfds.

  If `data_dir` holds ``train-NNNNN-of-NNNNN`` shards, `split`
  ("train"/"validation") is read from the shards of that name there
  (`imagenet_records.read`, labels shifted to ``[0, 1000)``); otherwise from
  a prepared tfds copy.

  Example:

  >>> import tensorflow_datasets as tfds
  >>> with tfds.testing.mock_data(num_examples=2):
  ...   ds = source("validation", None, training=False, seed=0)
  >>> ds.element_spec[0].dtype
  tf.string
  """
  if imagenet_records.has_records(data_dir):
    try:
      return imagenet_records.read(split, data_dir, training, seed)
    except FileNotFoundError as e:
      raise common.DataNotFoundError(
          f"{e} The training shards are there, so the folder is read as TFRecord "
          f"shards: add the {split} shards (e.g. with "
          "examples/make_synthetic_imagenet.py) or point --data_dir elsewhere.") from e
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return common.tfds_source(
      INFO, split, data_dir, training, seed, MISSING_HELP,
      decoders={"image": tfds.decode.SkipDecoding()})


def _normalize(image):
  image = tf.cast(image, tf.float32)
  return (image - tf.constant(MEAN_RGB)) / tf.constant(STDDEV_RGB)


def preprocess_train(image_bytes, label, seed, image_size=IMAGE_SIZE):
  """Random resized crop to `image_size` (224) + random flip + normalise.

  Example:

  >>> jpeg = tf.io.encode_jpeg(tf.zeros([300, 200, 3], tf.uint8))
  >>> x, y = preprocess_train(jpeg, 5, [0, 1])
  >>> tuple(x.shape), x.dtype.name, y.dtype.name
  ((224, 224, 3), 'float32', 'int32')
  >>> tuple(preprocess_train(jpeg, 5, [0, 1], image_size=32)[0].shape)
  (32, 32, 3)
  """
  box_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(
      tf.cast(seed, tf.int64), 2))
  shape = tf.image.extract_jpeg_shape(image_bytes)
  whole_image = tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4])
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, whole_image, seed=box_seed, min_object_covered=0.1,
      aspect_ratio_range=ASPECT_RATIO_RANGE, area_range=AREA_RANGE,
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  offset_y, offset_x, _ = tf.unstack(begin)
  height, width, _ = tf.unstack(size)
  window = tf.stack([offset_y, offset_x, height, width])
  image = tf.io.decode_and_crop_jpeg(image_bytes, window, channels=3)
  image = tf.image.resize(image, [image_size, image_size], method="bilinear")
  image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  image = tf.ensure_shape(image, (image_size, image_size, 3))
  return _normalize(image), tf.cast(label, tf.int32)


def preprocess_eval(image_bytes, label, image_size=IMAGE_SIZE):
  """Shorter side to 256 (aspect kept), centre crop 224, normalise.

  A different `image_size` resizes the shorter side to
  ``round(image_size * 256 / 224)`` and crops `image_size`.

  Example:

  >>> jpeg = tf.io.encode_jpeg(tf.zeros([300, 600, 3], tf.uint8))
  >>> x, _ = preprocess_eval(jpeg, 0)
  >>> tuple(x.shape), tuple(preprocess_eval(jpeg, 0, image_size=48)[0].shape)
  ((224, 224, 3), (48, 48, 3))
  """
  resize_size = int(round(image_size * RESIZE_SIZE / IMAGE_SIZE))
  image = tf.io.decode_jpeg(image_bytes, channels=3)
  shape = tf.shape(image)
  height = tf.cast(shape[0], tf.float32)
  width = tf.cast(shape[1], tf.float32)
  scale = resize_size / tf.minimum(height, width)
  # max() guards against rounding the shorter side below resize_size.
  new_height = tf.maximum(tf.cast(tf.round(height * scale), tf.int32),
                          resize_size)
  new_width = tf.maximum(tf.cast(tf.round(width * scale), tf.int32),
                         resize_size)
  image = tf.image.resize(image, [new_height, new_width], method="bilinear",
                          antialias=True)
  image = tf.image.crop_to_bounding_box(
      image, (new_height - image_size) // 2, (new_width - image_size) // 2,
      image_size, image_size)
  image = tf.ensure_shape(image, (image_size, image_size, 3))
  return _normalize(image), tf.cast(label, tf.int32)
