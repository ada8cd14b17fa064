"""Fashion-MNIST, read offline from the Debian package or from tfds.

The Debian package `dataset-fashion-mnist` installs the original idx files in
`/usr/share/datasets/fashion-mnist`; reading them with numpy needs no
network and no tfds preparation, so demos and benchmarks run anywhere. When
they are absent we fall back to a tfds-prepared `fashion_mnist`.

Images are scaled to [0, 1], shape (28, 28, 1); no augmentation (as in the
RigL MNIST experiments).
"""

from __future__ import annotations  # tf.data types in annotations: TensorFlow loads lazily.

import functools
import gzip
import os
from typing import Optional, Tuple

import numpy as np
from keras_rigl.backend import tf

from keras_rigl.data import common

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"

INFO = common.DatasetInfo(
    name="fashion_mnist", num_classes=10, input_shape=(28, 28, 1),
    num_train=60000, num_eval=10000, tfds_name="fashion_mnist",
    eval_split="test", shuffle_buffer=60000)

# idx file stems per split (the names used by the Debian package and upstream).
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IMAGES_MAGIC = 2051  # idx3, unsigned bytes
_LABELS_MAGIC = 2049  # idx1, unsigned bytes

MISSING_HELP = (
    "Either install the Debian package (`apt-get install "
    "dataset-fashion-mnist`, files in /usr/share/datasets/fashion-mnist, or "
    "pass `--data_dir` pointing at a folder with the four idx .gz files), or "
    "pass `--data_dir` with a tfds-prepared copy (`tfds build fashion_mnist "
    "--data_dir=DIR` on a machine with internet access, then copy DIR).")


def _find(directory: str, stem: str) -> Optional[str]:
  for name in (stem + ".gz", stem):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  return None


def _read_idx(path: str, magic: int, ndim: int) -> np.ndarray:
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  header_len = 4 + 4 * ndim  # 16 bytes for images, 8 for labels
  header = np.frombuffer(data, ">i4", count=1 + ndim)
  if header[0] != magic:
    raise ValueError(f"{path} is not an idx file (magic {header[0]}, "
                     f"expected {magic}).")
  shape = tuple(int(d) for d in header[1:])
  array = np.frombuffer(data, np.uint8, offset=header_len)
  if array.size != int(np.prod(shape)):
    raise ValueError(f"{path} holds {array.size} bytes of data but its "
                     f"header says shape {shape}.")
  return array.reshape(shape)


def find_idx_dir(data_dir: Optional[str] = None) -> Optional[str]:
  """The folder holding all four idx files, or None.

  `data_dir=None` means the Debian package's folder.

  Example:

  >>> find_idx_dir("/nonexistent") is None
  True
  """
  directory = data_dir or DEFAULT_DIR
  for stems in _FILES.values():
    if any(_find(directory, stem) is None for stem in stems):
      return None
  return directory


@functools.lru_cache(maxsize=4)
def _load_idx_cached(directory: str, split: str):
  image_stem, label_stem = _FILES[split]
  images = _read_idx(_find(directory, image_stem), _IMAGES_MAGIC, 3)
  labels = _read_idx(_find(directory, label_stem), _LABELS_MAGIC, 1)
  if len(images) != len(labels):
    raise ValueError(f"{directory}: {len(images)} images but {len(labels)} "
                     f"labels in the {split!r} split.")
  return images[..., np.newaxis], labels  # read-only views of the file bytes


def load_arrays(
    split: str = "train",
    data_dir: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
  """Reads one split from idx files as numpy arrays, no TensorFlow involved.

  Args:
    split: `"train"` or `"test"` (`"eval"` is accepted for `"test"`).
    data_dir: folder with the idx files (`.gz` or not); default is the
      Debian package's `/usr/share/datasets/fashion-mnist`.

  Returns:
    `(images, labels)`: uint8 `(N, 28, 28, 1)` and uint8 `(N,)`, read-only.

  Raises:
    DataNotFoundError: the idx files are not there.

  Example:

  >>> images, labels = load_arrays("test")
  >>> images.shape, labels.shape
  ((10000, 28, 28, 1), (10000,))
  """
  split = "test" if split == "eval" else split
  if split not in _FILES:
    raise ValueError(f"Unknown Fashion-MNIST split {split!r}; use 'train' or "
                     "'test'.")
  directory = find_idx_dir(data_dir)
  if directory is None:
    raise common.DataNotFoundError(
        f"No Fashion-MNIST idx files in {data_dir or DEFAULT_DIR}. "
        + MISSING_HELP)
  return _load_idx_cached(os.path.abspath(directory), split)


def source(split: str, data_dir: Optional[str], training: bool,
           seed: int) -> tf.data.Dataset:
  """Raw `(uint8 image (28, 28, 1), label)` records of one split.

  idx files in `data_dir` (or the Debian folder when `data_dir` is None) win;
  otherwise a tfds-prepared `fashion_mnist` in `data_dir` is read (never
  downloaded).

  Example:

  >>> ds = source("test", None, training=False, seed=0)
  >>> ds.element_spec[0].shape
  TensorShape([28, 28, 1])
  """
  if find_idx_dir(data_dir) is not None:
    images, labels = load_arrays(split, data_dir)
    return tf.data.Dataset.from_tensor_slices((images, labels))
  try:
    return common.tfds_source(INFO, split, data_dir, training, seed,
                              MISSING_HELP)
  except common.DataNotFoundError as e:
    raise common.DataNotFoundError(
        f"Fashion-MNIST not found: no idx files in {data_dir or DEFAULT_DIR} "
        f"and no tfds-prepared copy in "
        f"{data_dir or '~/tensorflow_datasets'}. " + MISSING_HELP) from e


def _to_float(image, label):
  image = tf.cast(image, tf.float32) / 255.0
  return tf.ensure_shape(image, INFO.input_shape), tf.cast(label, tf.int32)


def preprocess_train(image, label, seed):
  """Scales to [0, 1]; no augmentation, `seed` unused.

  Example:

  >>> x, y = preprocess_train(tf.fill([28, 28, 1], tf.constant(255, tf.uint8)),
  ...                         3, [0, 0])
  >>> float(tf.reduce_max(x)), int(y)
  (1.0, 3)
  """
  del seed  # Fashion-MNIST is trained without augmentation.
  return _to_float(image, label)


def preprocess_eval(image, label):
  """Scales to [0, 1].

  Example:

  >>> x, y = preprocess_eval(tf.zeros([28, 28, 1], tf.uint8), 3)
  >>> x.dtype.name, y.dtype.name
  ('float32', 'int32')
  """
  return _to_float(image, label)
