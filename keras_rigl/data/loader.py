"""One entry point for every dataset: `load`, `dataset_info`, `steps_per_epoch`.

Distribution choice: given a `strategy`, `load` returns
`strategy.distribute_datasets_from_function(...)`: every input pipeline
reads only its shard of the records (`Dataset.shard(num_input_pipelines,
input_pipeline_id)`) and batches `global_batch // num_replicas_in_sync`
examples per replica. This one path is right for MirroredStrategy,
MultiWorkerMirroredStrategy and TPUStrategy alike: no re-batching of a global
batch, no reliance on auto-shard policies (which fall back from file to data
sharding with a warning for tfds), and each pipeline's shuffle and
augmentation seeds stay reproducible. Keras `model.fit` accepts the result
(both Keras 3 and tf_keras). Without a strategy `load` returns a plain
global-batch `tf.data.Dataset`, which `model.fit` under a
MirroredStrategy scope also distributes by itself.
"""

from __future__ import annotations  # tf.data types in annotations: TensorFlow loads lazily.

import functools
import numbers
from typing import Optional

from keras_rigl.backend import tf

from keras_rigl.data import cifar10
from keras_rigl.data import common
from keras_rigl.data import fashion_mnist
from keras_rigl.data import imagenet

DATASETS = {
    "fashion_mnist": fashion_mnist,
    "cifar10": cifar10,
    "imagenet2012": imagenet,
}
_ALIASES = {
    "fashion-mnist": "fashion_mnist",
    "fashionmnist": "fashion_mnist",
    "cifar-10": "cifar10",
    "imagenet": "imagenet2012",
}


def _module(name: str):
  key = str(name).lower()
  key = _ALIASES.get(key, key)
  if key not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; choose one of "
                     f"{sorted(DATASETS)}.")
  return DATASETS[key]


def _split(info: common.DatasetInfo, split: str) -> str:
  if split == "train":
    return "train"
  if split in ("eval", info.eval_split):
    return info.eval_split
  raise ValueError(f"Unknown split {split!r} for {info.name}; use 'train' or "
                   f"'eval' (also called {info.eval_split!r}).")


def dataset_info(name: str) -> common.DatasetInfo:
  """Number of classes, input shape and example counts of a dataset.

  Args:
    name: `"fashion_mnist"`, `"cifar10"` or `"imagenet2012"` (alias
      `"imagenet"`).

  Returns:
    A `DatasetInfo` with `num_classes`, `input_shape`, `num_train`,
    `num_eval` (the full, official splits).

  Example:

  >>> info = dataset_info("cifar10")
  >>> info.num_classes, info.input_shape, info.num_train, info.num_eval
  (10, (32, 32, 3), 50000, 10000)
  """
  return _module(name).INFO


def steps_per_epoch(name: str, split: str, batch_size: int) -> int:
  """Batches in one pass over a split at a global `batch_size`.

  Training batches drop the remainder (floor); eval batches keep it (ceil).
  Use it as `steps_per_epoch` with `repeat=True`.

  Example:

  >>> steps_per_epoch("fashion_mnist", "train", 128)
  468
  >>> steps_per_epoch("fashion_mnist", "eval", 128)
  79
  """
  info = dataset_info(name)
  if _split(info, split) == "train":
    return info.num_train // batch_size
  return -(-info.num_eval // batch_size)


def load(name: str,
         split: str,
         batch_size: int,
         data_dir: Optional[str] = None,
         *,
         shuffle: Optional[bool] = None,
         seed: Optional[int] = 0,
         repeat: bool = False,
         training: Optional[bool] = None,
         drop_remainder: Optional[bool] = None,
         shuffle_buffer: Optional[int] = None,
         strategy: Optional[tf.distribute.Strategy] = None,
         input_context: Optional[tf.distribute.InputContext] = None,
         start_step: int = 0,
         image_size: Optional[int] = None):
  """A batched `(image float32, label int32)` dataset, ready for `model.fit`.

  Args:
    name: `"fashion_mnist"`, `"cifar10"` or `"imagenet2012"`.
    split: `"train"` or `"eval"` (or the dataset's own eval split name,
      `"test"` / `"validation"`).
    batch_size: the GLOBAL batch size (summed over all replicas).
    data_dir: where the data lives. Fashion-MNIST: a folder with the idx
      files, or a tfds data_dir; default the Debian package's folder, then
      `~/tensorflow_datasets`. Others: the tfds data_dir. Nothing is ever
      downloaded.
    shuffle: shuffle the records; default: only when training.
    seed: makes shuffling and augmentation reproducible; `None` for a random
      seed.
    repeat: repeat forever (then pass `steps_per_epoch` to `fit`).
    training: apply training augmentation; default `split == "train"`.
    drop_remainder: drop the last partial batch; default when training
      (static batch shapes, which TPUs need).
    shuffle_buffer: records in the shuffle buffer; default per dataset.
    strategy: a `tf.distribute.Strategy`; if given, returns a distributed
      dataset with per-replica batches of `batch_size // num_replicas`.
    input_context: for use inside your own
      `distribute_datasets_from_function`: shard by it and batch per replica.
    start_step: begin at this training step of the stream (resuming a run):
      with `repeat=True` the order is a function of (seed, pass over the
      data, position), so `load(..., start_step=k)` yields exactly the
      batches from the k-th on of `load(..., start_step=0)`.
    image_size: square images of this size instead of the dataset's own
      (quick runs of the ImageNet models). ImageNet crops to it directly;
      the others are resized after their preprocessing.

  Returns:
    A `tf.data.Dataset`, or a distributed dataset when `strategy` is given.

  Raises:
    DataNotFoundError: the data is not on disk; the message says how to get
      it.

  Example:

  >>> ds = load("fashion_mnist", "train", batch_size=128, seed=1)
  >>> images, labels = next(iter(ds))
  >>> images.shape, labels.dtype
  (TensorShape([128, 28, 28, 1]), tf.int32)
  """
  module = _module(name)
  info = module.INFO
  tfds_split = _split(info, split)
  training = (tfds_split == "train") if training is None else bool(training)
  shuffle = training if shuffle is None else bool(shuffle)
  drop_remainder = training if drop_remainder is None else bool(drop_remainder)
  shuffle_buffer = shuffle_buffer or info.shuffle_buffer
  seed = common.resolve_seed(seed)
  if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or \
      batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}; e.g. "
                     "batch_size=128.")
  if int(start_step) < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}.")
  prep_train, prep_eval = _preprocessing(module, image_size)

  def dataset_fn(context):
    raw = module.source(tfds_split, data_dir, training, seed)
    return common.build_pipeline(
        raw, prep_train, prep_eval,
        common.per_replica_batch_size(batch_size, context),
        training=training, shuffle=shuffle, shuffle_buffer=shuffle_buffer,
        seed=seed, repeat=repeat, drop_remainder=drop_remainder,
        input_context=context, start_step=start_step)

  if strategy is None:
    return dataset_fn(input_context)
  if input_context is not None:
    raise ValueError("Pass either `strategy` or `input_context`, not both.")
  return distribute(strategy, dataset_fn)


def _preprocessing(module, image_size):
  """(train, eval) preprocessing of `module` giving `image_size` images."""
  if image_size is None:
    return module.preprocess_train, module.preprocess_eval
  if int(image_size) != image_size or image_size < 1:
    raise ValueError(f"image_size must be a positive integer, got {image_size!r}.")
  size = int(image_size)
  if getattr(module, "CROPS_TO_SIZE", False):
    return (functools.partial(module.preprocess_train, image_size=size),
            functools.partial(module.preprocess_eval, image_size=size))

  def resized(preprocess):
    def fn(*args):
      image, label = preprocess(*args)
      return tf.image.resize(image, [size, size]), label
    return fn

  return resized(module.preprocess_train), resized(module.preprocess_eval)


def distribute(strategy: tf.distribute.Strategy, dataset_fn):
  """`strategy.distribute_datasets_from_function(dataset_fn)`, explained.

  `dataset_fn(input_context)` is called once per input pipeline (worker) and
  must shard by the context and batch per replica, as `load` does.

  Example:

  >>> strategy = tf.distribute.get_strategy()
  >>> dist = distribute(strategy, lambda ctx: tf.data.Dataset.range(4).batch(
  ...     ctx.get_per_replica_batch_size(2)))
  >>> [int(x.shape[0]) for x in dist]
  [2, 2]
  """
  if not isinstance(strategy, tf.distribute.Strategy):
    raise TypeError(f"distribute needs a tf.distribute.Strategy, got {strategy!r}; e.g. "
                    "distribute(tf.distribute.get_strategy(), dataset_fn).")
  if not callable(dataset_fn):
    raise TypeError(f"distribute needs dataset_fn(input_context) -> tf.data.Dataset, got "
                    f"{dataset_fn!r}.")
  return strategy.distribute_datasets_from_function(dataset_fn)
