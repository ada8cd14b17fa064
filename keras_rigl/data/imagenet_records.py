"""ImageNet as TFRecord shards in the layout TensorFlow's ImageNet readers use.

The TPU / TF-official ResNet and MobileNet trainers (and so the RigL authors'
ImageNet code) read ImageNet from TFRecord files called
``train-00000-of-01024`` ... ``train-01023-of-01024`` and
``validation-00000-of-00128`` ... ``validation-00127-of-00128``, each record
a `tf.train.Example` with the JPEG bytes under ``image/encoded`` and the class
under ``image/class/label`` as an int64 in ``[1, 1000]`` (0 is reserved for a
"background" class the readers drop by subtracting one). The other keys
(``image/format``, ``image/height``, ``image/width``, ``image/channels``,
``image/colorspace``, ``image/filename``, ``image/class/synset``,
``image/class/text``, ``image/object/bbox/*``) are written by the usual
conversion script but not needed for training.

This module is that layout: file names, the feature keys, a parser giving
``(JPEG bytes, label in [0, num_classes))`` and a writer of one record
(`serialize_example`), which `examples/make_synthetic_imagenet.py` uses to
write a small synthetic set. `keras_rigl.data.imagenet.source` reads a
`data_dir` in this layout when it finds one, a tfds copy otherwise.

Pure `tf.data`; nothing here imports Keras.

Example:

>>> import tempfile, os
>>> folder = tempfile.mkdtemp()
>>> jpeg = tf.io.encode_jpeg(tf.zeros([4, 4, 3], tf.uint8)).numpy()
>>> with tf.io.TFRecordWriter(os.path.join(folder, shard_name("train", 0, 1))) as w:
...   w.write(serialize_example(jpeg, label=3, height=4, width=4))
>>> raw = read("train", folder, training=False, seed=0)
>>> [int(label) for _, label in raw]     # stored as 4 (1-based), read as 3
[3]
"""

from __future__ import annotations  # tf.data types in annotations: TensorFlow loads lazily.

import os
from typing import List

from keras_rigl.backend import tf

# The file prefix of each split, as the conversion script names them.
SPLIT_PREFIX = {"train": "train", "validation": "validation"}
# Shard counts of the full ILSVRC-2012 conversion.
NUM_SHARDS = {"train": 1024, "validation": 128}
# What stored labels start at: 1 (0 is the unused "background" class).
LABEL_OFFSET = 1

IMAGE_KEY = "image/encoded"
LABEL_KEY = "image/class/label"


def _features():
  return {
      IMAGE_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
      LABEL_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
  }


def shard_name(split: str, index: int, num_shards: int) -> str:
  """The file name of shard `index` of `split`, e.g. ``train-00003-of-01024``.

  Example:

  >>> shard_name("validation", 7, 128)
  'validation-00007-of-00128'
  """
  if split not in SPLIT_PREFIX:
    raise ValueError(f"Unknown split {split!r}; use one of {sorted(SPLIT_PREFIX)}.")
  if not 0 <= index < num_shards:
    raise ValueError(f"Shard index {index} is outside [0, {num_shards}).")
  return f"{SPLIT_PREFIX[split]}-{index:05d}-of-{num_shards:05d}"


def files(split: str, data_dir: str) -> List[str]:
  """The sorted shard files of `split` in `data_dir` (empty if there are none).

  Example:

  >>> import tempfile
  >>> files("train", tempfile.mkdtemp())
  []
  """
  if not data_dir:
    return []
  pattern = os.path.join(data_dir, f"{SPLIT_PREFIX[split]}-?????-of-?????")
  return sorted(tf.io.gfile.glob(pattern))


def has_records(data_dir) -> bool:
  """True when `data_dir` holds training shards in this layout.

  Example:

  >>> has_records(None)
  False
  """
  return bool(files("train", data_dir))


def serialize_example(jpeg: bytes, label: int, height: int, width: int,
                      filename: str = "", synset: str = "", text: str = "") -> bytes:
  """One serialized `tf.train.Example` in the conversion script's format.

  `label` is the class in ``[0, 1000)``; it is stored as ``label + 1``, as
  the real files store it.

  Example:

  >>> record = serialize_example(b"...", label=0, height=2, width=2)
  >>> parsed = tf.io.parse_single_example(record, {
  ...     LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)})
  >>> int(parsed[LABEL_KEY])
  1
  """
  def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

  def _int(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

  def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))

  feature = {
      IMAGE_KEY: _bytes(jpeg),
      "image/format": _bytes(b"JPEG"),
      "image/colorspace": _bytes(b"RGB"),
      "image/channels": _int(3),
      "image/height": _int(height),
      "image/width": _int(width),
      "image/filename": _bytes(filename.encode()),
      LABEL_KEY: _int(label + LABEL_OFFSET),
      "image/class/synset": _bytes(synset.encode()),
      "image/class/text": _bytes(text.encode()),
      # No boxes (as most training images): empty lists.
      "image/object/bbox/xmin": _floats([]),
      "image/object/bbox/ymin": _floats([]),
      "image/object/bbox/xmax": _floats([]),
      "image/object/bbox/ymax": _floats([]),
      "image/object/bbox/label": tf.train.Feature(int64_list=tf.train.Int64List()),
  }
  return tf.train.Example(
      features=tf.train.Features(feature=feature)).SerializeToString()


def parse(record):
  """``(JPEG bytes, int32 label in [0, 1000))`` of one serialized record.

  Example:

  >>> jpeg, label = parse(serialize_example(b"abc", label=9, height=1, width=1))
  >>> jpeg.numpy(), int(label)
  (b'abc', 9)
  """
  parsed = tf.io.parse_single_example(record, _features())
  label = tf.cast(parsed[LABEL_KEY], tf.int32) - LABEL_OFFSET
  return parsed[IMAGE_KEY], label


def read(split: str, data_dir: str, training: bool, seed: int) -> tf.data.Dataset:
  """Raw ``(JPEG bytes, label)`` records of `split` from the shards in `data_dir`.

  The shards are read in a fixed order (shuffled by `seed` when `training`),
  several at a time and deterministically, so the stream depends only on the
  files and `seed`. Example in the module docstring.

  Raises:
    FileNotFoundError: no shard of `split` is in `data_dir`.
  """
  names = files(split, data_dir)
  if not names:
    raise FileNotFoundError(
        f"No {split} shards ({SPLIT_PREFIX[split]}-NNNNN-of-NNNNN) in {data_dir}.")
  dataset = tf.data.Dataset.from_tensor_slices(names)
  if training and len(names) > 1:
    dataset = dataset.shuffle(len(names), seed=seed, reshuffle_each_iteration=False)
  dataset = dataset.interleave(
      lambda name: tf.data.TFRecordDataset(name, buffer_size=8 << 20),
      cycle_length=min(16, len(names)), num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True)
  return dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
