"""The input datasets of a run: training (for `fit` and RigL) and evaluation.

Example:
>>> import tensorflow as tf
>>> import keras_rigl as kr
>>> from keras_rigl.recipes import configs, inputs
>>> config = configs.get_config("fashion_mnist_lenet300_100").replace(batch_size=32)
>>> ds = inputs.make_datasets(config, tf.distribute.get_strategy(), start_step=5)
>>> ds.fit_input.element_spec[0].shape
TensorShape([32, 28, 28, 1])
"""

import collections

from absl import logging
from keras_rigl.backend import tf

from keras_rigl import data as _data
from keras_rigl.recipes.strategy import is_tpu
from keras_rigl.recipes.strategy import reads_per_worker

Datasets = collections.namedtuple("Datasets", ["rigl", "fit_input", "evaluation"])


def make_datasets(config, strategy, *, data_dir=None, seed=0, image_size=None,
                  start_step=0):
  """(rigl, fit_input, evaluation) global-batch datasets of a run.

  `fit_input` is what `fit` reads: the training stream from step
  `start_step` on (a resumed run reads exactly the batches an uninterrupted
  one would; `kr.data.load` orders them by (seed, pass, position)). It is
  the plain global-batch dataset (Keras splits it over the replicas) except
  on TPU / multi-worker, where every worker reads its own shard. `rigl` is
  the same stream from step 0, for RigL's gradient batches (the scheduler
  skips what earlier updates used). `evaluation` is the eval split.
  """
  common = dict(data_dir=data_dir, seed=seed, image_size=image_size)

  def train(start, context=None):
    return _data.load(config.dataset, "train", config.batch_size, repeat=True,
                      input_context=context, start_step=start, **common)

  rigl = train(0)
  fit_input = train(start_step) if start_step else rigl
  if reads_per_worker(strategy):
    fit_input = _data.distribute(strategy, lambda context: train(start_step, context))
  info = _data.dataset_info(config.dataset)
  eval_batch = config.eval_batch_size or config.batch_size
  replicas = strategy.num_replicas_in_sync
  # TPUs need static shapes; Keras 3 under MirroredStrategy fails on a last
  # batch that does not split evenly over the replicas.
  drop = is_tpu(strategy) or (replicas > 1 and info.num_eval % eval_batch % replicas != 0)
  if drop and not is_tpu(strategy):
    logging.warning("Evaluation skips the last %d examples (a batch that does not "
                    "split over %d replicas).", info.num_eval % eval_batch, replicas)
  evaluation = _data.load(config.dataset, "eval", eval_batch, drop_remainder=drop,
                          **common)
  return Datasets(rigl, fit_input, evaluation)
