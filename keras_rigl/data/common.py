"""Shared pieces of the input pipelines: metadata, errors, batching, sharding.

Every dataset module (`fashion_mnist`, `cifar10`, `imagenet`) provides three
things and this module turns them into a batched `tf.data.Dataset`:

* `INFO`: a `DatasetInfo` (classes, input shape, example counts).
* `source(split, data_dir, training, seed)`: the raw, unbatched
  `(image, label)` records (uint8 pixels or encoded JPEG bytes).
* `preprocess_train(image, label, seed)` / `preprocess_eval(image, label)`:
  float32 image and int32 label. `seed` is a stateless `[2]` seed that is
  different for every example, so augmentation is reproducible even under
  parallel `map`.

Pure `tf.data`; nothing here imports Keras.
"""

from __future__ import annotations  # tf.data types in annotations: TensorFlow loads lazily.

import dataclasses
from typing import Callable, Optional, Tuple

import numpy as np
from keras_rigl.backend import tf


class DataNotFoundError(FileNotFoundError):
  """A dataset is not on disk and cannot be fetched automatically.

  The message always says how to get the data. Being a `FileNotFoundError`,
  it can be caught like any missing file.

  Example:

  >>> try:
  ...   raise DataNotFoundError("run `apt-get install dataset-fashion-mnist`")
  ... except FileNotFoundError as e:
  ...   print(e)
  run `apt-get install dataset-fashion-mnist`
  """


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static facts about a dataset that a trainer needs before reading it.

  Attributes:
    name: canonical name, e.g. `"cifar10"`.
    num_classes: number of label classes.
    input_shape: `(height, width, channels)` of one preprocessed image.
    num_train: examples in the training split.
    num_eval: examples in the eval split.
    tfds_name: name of the dataset in tensorflow-datasets.
    eval_split: the tfds split used for evaluation (`"test"`/`"validation"`).
    shuffle_buffer: default shuffle buffer for training.

  Example:

  >>> info = DatasetInfo("toy", 2, (8, 8, 1), 100, 20, "toy", "test", 100)
  >>> info.num_train // 32        # steps per epoch at batch size 32
  3
  """
  name: str
  num_classes: int
  input_shape: Tuple[int, int, int]
  num_train: int
  num_eval: int
  tfds_name: str
  eval_split: str
  shuffle_buffer: int


def resolve_seed(seed: Optional[int]) -> int:
  """Returns `seed`, or a fresh random one when `seed` is None.

  Stateless augmentation always needs a concrete seed, so `None` ("not
  reproducible") is turned into a random integer once per pipeline.

  Example:

  >>> resolve_seed(7)
  7
  >>> isinstance(resolve_seed(None), int)
  True
  """
  if seed is None:
    return int(np.random.SeedSequence().entropy % (2**31 - 1))
  return int(seed)


def shard(dataset: tf.data.Dataset,
          input_context: Optional[tf.distribute.InputContext]):
  """Keeps this input pipeline's share of `dataset` (a no-op for one pipeline).

  Sharding is by record (`Dataset.shard`), which is exact for any number of
  files; it is applied to the raw records, before decoding and augmentation,
  so each worker pays only for its own share of the preprocessing.

  Example:

  >>> ctx = tf.distribute.InputContext(num_input_pipelines=2,
  ...                                  input_pipeline_id=1)
  >>> [int(i) for i in shard(tf.data.Dataset.range(6), ctx)]
  [1, 3, 5]
  """
  if input_context is None or input_context.num_input_pipelines <= 1:
    return dataset
  return dataset.shard(input_context.num_input_pipelines,
                       input_context.input_pipeline_id)


def per_replica_batch_size(global_batch_size: int,
                           input_context: Optional[tf.distribute.InputContext]):
  """The batch each pipeline must emit so that replicas see `global` in total.

  Example:

  >>> ctx = tf.distribute.InputContext(num_replicas_in_sync=4)
  >>> per_replica_batch_size(256, ctx)
  64
  >>> per_replica_batch_size(256, None)
  256
  """
  if input_context is None:
    return int(global_batch_size)
  # Raises a ValueError naming both numbers when they do not divide.
  return input_context.get_per_replica_batch_size(int(global_batch_size))


def build_pipeline(raw: tf.data.Dataset,
                   preprocess_train: Callable,
                   preprocess_eval: Callable,
                   batch_size: int,
                   *,
                   training: bool,
                   shuffle: bool,
                   shuffle_buffer: int,
                   seed: int,
                   repeat: bool,
                   drop_remainder: bool,
                   input_context: Optional[tf.distribute.InputContext] = None,
                   start_step: int = 0):
  """Shard -> shuffle -> repeat -> preprocess -> batch -> prefetch.

  `batch_size` is the batch this pipeline emits (already per replica when
  distributed). Shuffling happens per pass over the data so that every pass
  is a full pass. Each example gets its own stateless seed from its position
  in the stream (and the pipeline id), so the augmentation is the same on
  every run with the same `seed`, and differs between passes.

  With `repeat=True` the stream is a function of (seed, pass, position)
  only (not of `tf.random.set_seed`): pass ``p`` is shuffled with a seed
  derived from (`seed`, pipeline id, ``p``), independently of earlier
  passes. `start_step` then starts the
  stream at training step `start_step` (the batches an earlier, interrupted
  run already consumed are skipped as raw records, before decoding), so a
  resumed run reads exactly the batches an uninterrupted one would.

  Example:

  >>> raw = tf.data.Dataset.from_tensor_slices(
  ...     (tf.zeros([10, 2, 2, 1], tf.uint8), tf.range(10)))
  >>> prep = lambda x, y, s=None: (tf.cast(x, tf.float32), tf.cast(y, tf.int32))
  >>> ds = build_pipeline(raw, prep, prep, 4, training=True, shuffle=True,
  ...                     shuffle_buffer=10, seed=0, repeat=False,
  ...                     drop_remainder=True)
  >>> [tuple(x.shape) for x, _ in ds]
  [(4, 2, 2, 1), (4, 2, 2, 1)]
  >>> stream = lambda start: build_pipeline(
  ...     raw, prep, prep, 4, training=True, shuffle=True, shuffle_buffer=10,
  ...     seed=0, repeat=True, drop_remainder=True, start_step=start)
  >>> whole = [y.numpy().tolist() for _, y in stream(0).take(5)]
  >>> whole[3:] == [y.numpy().tolist() for _, y in stream(3).take(2)]
  True
  """
  start_step = int(start_step)
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}.")
  dataset = shard(raw, input_context)
  pipeline_id = input_context.input_pipeline_id if input_context else 0
  # Records this pipeline emits per training step: its batch times the
  # replicas it feeds.
  replicas_per_pipeline = 1
  if input_context is not None and input_context.num_input_pipelines > 0:
    replicas_per_pipeline = max(
        1, input_context.num_replicas_in_sync // input_context.num_input_pipelines)
  start_record = start_step * int(batch_size) * replicas_per_pipeline

  if repeat:
    pass_seed_base = tf.constant([seed, pipeline_id], tf.int64)

    def one_pass(index):
      if not shuffle:
        return dataset
      # A stateless draw keyed by (seed, pipeline, pass): a new order each pass.
      pass_seed = tf.random.stateless_uniform(
          [], tf.random.experimental.stateless_fold_in(pass_seed_base, index),
          minval=0, maxval=2**31 - 1, dtype=tf.int64)
      # The order must not depend on tf.random.set_seed: the shuffle's seed
      # pair is (graph seed, pass_seed), so clear this function's graph seed.
      tf.compat.v1.get_default_graph().seed = None
      return dataset.shuffle(shuffle_buffer, seed=pass_seed,
                             reshuffle_each_iteration=False)

    # Start at the pass that holds `start_record` when the pass length is
    # known; skip within it (cheap: raw records, not decoded images).
    size = int(dataset.cardinality())
    first_pass, offset = 0, start_record
    if size > 0:
      first_pass, offset = divmod(start_record, size)
    dataset = tf.data.Dataset.range(first_pass, 2**62).flat_map(one_pass)
  else:
    if shuffle:
      dataset = dataset.shuffle(shuffle_buffer, seed=seed + pipeline_id,
                                reshuffle_each_iteration=True)
    offset = start_record
  if offset:
    dataset = dataset.skip(offset)
  if training:
    base_seed = tf.constant([seed, pipeline_id], tf.int64)

    def _train_map(index, example):
      example_seed = tf.random.experimental.stateless_fold_in(base_seed, index)
      return preprocess_train(example[0], example[1], example_seed)

    dataset = dataset.enumerate(start=start_record).map(
        _train_map, num_parallel_calls=tf.data.AUTOTUNE)
  else:
    dataset = dataset.map(preprocess_eval, num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
  return dataset.prefetch(tf.data.AUTOTUNE)


def tfds_source(info: DatasetInfo,
                split: str,
                data_dir: Optional[str],
                training: bool,
                seed: int,
                missing_help: str,
                decoders=None):
  """Reads a prepared tfds split as `(image, label)` records; never downloads.

  Uses `builder.as_dataset`, which only reads what `download_and_prepare`
  (or `tfds build`) already wrote to `data_dir`. If nothing is there, raises
  `DataNotFoundError` with `missing_help` appended.

  Example:

  >>> import tensorflow_datasets as tfds
  >>> info = DatasetInfo("cifar10", 10, (32, 32, 3), 50000, 10000,
  ...                    "cifar10", "test", 10000)
  >>> with tfds.testing.mock_data(num_examples=3):
  ...   ds = tfds_source(info, "train", None, True, 0, "see the README")
  >>> ds.element_spec[0].shape
  TensorShape([32, 32, 3])
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(info.tfds_name, data_dir=data_dir)
    return builder.as_dataset(
        split=split,
        as_supervised=True,
        shuffle_files=training,
        decoders=decoders,
        read_config=tfds.ReadConfig(shuffle_seed=seed))
  except (AssertionError, FileNotFoundError, tf.errors.NotFoundError) as e:
    where = data_dir or "the default tfds data_dir (~/tensorflow_datasets)"
    raise DataNotFoundError(
        f"Dataset {info.name!r} (tfds {info.tfds_name!r}) was not found in "
        f"{where}. {missing_help}\n(tfds said: {e})") from e
