r"""Trains a network with RigL, SET, static masks, pruning, or dense.

The defaults run the embedded demo: LeNet-300-100 on Fashion-MNIST (read
offline from the Debian package), RigL at sparsity 0.9 with the ERK
distribution, 10 epochs, then print a report (test accuracy, per-layer
sparsity, FLOPs and model size relative to dense) and save ``report.png`` and
``report.json`` in --model_dir:

  python examples/train.py
  python examples/train.py --method=set --sparsity=0.95 --distribution=uniform

The authors' setups are named configs (examples/configs.py); explicit flags
override single values:

  python examples/train.py --config=imagenet_resnet50 --data_dir=DIR \
      --strategy=tpu --tpu=NAME --model_dir=gs://BUCKET/run --mixed_precision
  python examples/train.py --config=cifar10_wrn_22_2 --data_dir=DIR \
      --training_steps_multiplier=2

docs/train.md describes every flag and config value. A run with --model_dir
resumes where it stopped (keras.callbacks.BackupAndRestore) when started again
with the same flags.
"""

import os
import sys

if __package__ in (None, ""):
  # `python examples/train.py`: make `keras_rigl` and `examples` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses
import importlib.util
import json
import math
import tempfile
import time
from typing import Optional, Tuple

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

import keras_rigl as kr
from keras_rigl._keras import keras
from examples import configs
from examples import report as report_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")

FLAGS = flags.FLAGS

# What to train. Flags left unset take the value of the config.
flags.DEFINE_enum("config", None, list(configs.CONFIGS),
                  "Named setup whose values are the defaults of the flags below. "
                  "Default: the setup for --model/--dataset "
                  f"(else {configs.DEFAULT}).")
flags.DEFINE_enum("model", None, configs.MODELS, "Architecture.")
flags.DEFINE_enum("dataset", None, configs.DATASETS, "Dataset.")
flags.DEFINE_enum("method", None, configs.METHODS,
                  "dense: the plain model; small_dense: a narrower dense model "
                  "with the sparse model's number of kernel weights; static: "
                  "fixed random masks; set / rigl: dynamic sparse training; "
                  "pruning: dense-to-sparse gradual magnitude pruning.")
flags.DEFINE_float("sparsity", None, "Overall sparsity of the sparse layers, in [0, 1).")
flags.DEFINE_enum("distribution", None, configs.DISTRIBUTIONS,
                  "How sparsity is spread over layers.")
flags.DEFINE_float("erk_power_scale", None, "Exponent of the ER/ERK densities.")
# How long, how fast.
flags.DEFINE_integer("train_steps", None, "Training steps (instead of --epochs).",
                     lower_bound=1)
flags.DEFINE_float("epochs", None, "Training epochs (instead of --train_steps).")
flags.DEFINE_integer("batch_size", None, "Global batch size (all replicas). The "
                     "learning rate scales linearly with it.", lower_bound=1)
flags.DEFINE_integer("eval_batch_size", None, "Global eval batch size "
                     "(default: --batch_size).", lower_bound=1)
flags.DEFINE_float("learning_rate", None, "Peak learning rate at this run's batch "
                   "size (default: the config's, scaled to the batch size).")
flags.DEFINE_float("weight_decay", None, "L2 coefficient: adds wd/2 * sum(w^2) of "
                   "every kernel to the loss.")
flags.DEFINE_float("label_smoothing", None, "Label smoothing of the cross entropy.")
flags.DEFINE_float("training_steps_multiplier", 1.0,
                   "Scales the training steps, the learning-rate warm-up and "
                   "boundaries and the mask-update / pruning steps (the paper's "
                   "RigL 2x, 5x).")
# Mask updates.
flags.DEFINE_integer("update_freq", None, "Steps between RigL/SET mask updates (and "
                     "pruning steps if the config has no pruning_freq).", lower_bound=1)
flags.DEFINE_float("drop_fraction", None, "Initial fraction of active weights that "
                   "move at a mask update.")
flags.DEFINE_string("drop_fraction_schedule", None,
                    "constant, cosine or exponential(_k): decay of the drop fraction.")
flags.DEFINE_integer("begin_step", None, "First step of RigL/SET mask updates.",
                     lower_bound=0)
flags.DEFINE_integer("end_step", None, "Last step of RigL/SET mask updates "
                     "(default: the config's, else 75% of the run).", lower_bound=0)
flags.DEFINE_integer("pruning_begin_step", None, "First pruning step.", lower_bound=0)
flags.DEFINE_integer("pruning_end_step", None, "Step at which pruning reaches the "
                     "target sparsity.", lower_bound=0)
flags.DEFINE_integer("pruning_freq", None, "Steps between pruning steps.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of initial weights, masks and data order.")
# Where and how.
flags.DEFINE_enum("strategy", "auto", STRATEGIES,
                  "tf.distribute strategy. auto: TPU if --tpu is set, mirrored "
                  "over several GPUs, else one device. mirrored without GPUs "
                  "uses every logical CPU. multi_worker reads TF_CONFIG.")
flags.DEFINE_string("tpu", None, "TPU name or address for --strategy=tpu/auto.")
flags.DEFINE_bool("mixed_precision", False,
                  "bfloat16 compute on TPU and CPU (CPUs without bfloat16 "
                  "units are slower, not faster), float16 with loss scaling on GPU.")
flags.DEFINE_integer("steps_per_execution", 1, "Train steps per tf.function call "
                     "(TPUs like 100s); must divide --update_freq.", lower_bound=1)
flags.DEFINE_string("model_dir", None,
                    "Checkpoints, TensorBoard logs, report.png/json. A run started "
                    "again with the same directory resumes. Default: a new "
                    "directory under the system temp dir.")
flags.DEFINE_string("export_dir", None, "If set, writes EXPORT_DIR/saved_model (masks "
                    "folded into the kernels) after training.")
flags.DEFINE_bool("export_tflite", False, "Also write EXPORT_DIR/model.tflite.")
flags.DEFINE_string("data_dir", None, "Where the data lives (tfds data_dir; for "
                    "Fashion-MNIST also a folder with the idx .gz files).")
# Knobs for quick runs and tests.
flags.DEFINE_integer("image_size", None, "Resize images to this size (and build the "
                     "model for it): smoke tests of the ImageNet models.", lower_bound=8)
flags.DEFINE_integer("steps_per_epoch", None, "Steps per Keras epoch (default: one "
                     "pass over the training set).", lower_bound=1)
flags.DEFINE_integer("eval_steps", None, "Cap on eval batches (default: the whole "
                     "eval split).", lower_bound=1)
flags.DEFINE_integer("eval_every", None, "Epochs between evaluations during training.",
                     lower_bound=1)
flags.DEFINE_enum("verbose", "auto", ["auto", "0", "1", "2"],
                  "Keras fit verbosity (1: progress bar, 2: a line per epoch).")

flags.register_validator(
    "sparsity", lambda v: v is None or 0.0 <= v < 1.0,
    message="--sparsity must be in [0, 1), e.g. 0.9.")
flags.register_validator(
    "epochs", lambda v: v is None or v > 0, message="--epochs must be > 0.")
flags.register_validator(
    "training_steps_multiplier", lambda v: v > 0,
    message="--training_steps_multiplier must be > 0.")
flags.register_validator(
    "drop_fraction", lambda v: v is None or 0.0 <= v <= 1.0,
    message="--drop_fraction must be in [0, 1].")
flags.register_multi_flags_validator(
    ["train_steps", "epochs"],
    lambda d: d["train_steps"] is None or d["epochs"] is None,
    message="Give --train_steps or --epochs, not both.")

# Flags whose value, when given, replaces the config field of the same name.
_CONFIG_FLAGS = ("model", "dataset", "method", "sparsity", "distribution",
                 "erk_power_scale", "batch_size", "eval_batch_size", "weight_decay",
                 "label_smoothing", "update_freq", "drop_fraction",
                 "drop_fraction_schedule", "begin_step", "end_step", "pruning_begin_step",
                 "pruning_end_step", "pruning_freq", "eval_every")


class SetupError(ValueError):
  """A run that cannot start as asked (main prints the message and exits)."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
  """How and where a `Config` runs (everything that is not a hyperparameter)."""
  config_name: str = configs.DEFAULT
  strategy: str = "auto"
  tpu: Optional[str] = None
  model_dir: Optional[str] = None
  export_dir: Optional[str] = None
  export_tflite: bool = False
  data_dir: Optional[str] = None
  mixed_precision: bool = False
  seed: int = 0
  image_size: Optional[int] = None
  steps_per_epoch: Optional[int] = None
  eval_steps: Optional[int] = None
  steps_per_execution: int = 1
  training_steps_multiplier: float = 1.0
  verbose: object = "auto"
  write_files: bool = True  # report.png/json, checkpoints, TensorBoard.
  print_report: bool = True


def setup_from_flags(flag_values=FLAGS):
  """(Config, RunOptions) from parsed flags: the config, then the flags given."""
  fv = flag_values
  name = fv.config or configs.for_model(fv.model, fv.dataset)
  config = configs.get(name)
  overrides = {key: fv[key].value for key in _CONFIG_FLAGS if fv[key].value is not None}
  if fv.train_steps is not None:
    overrides.update(train_steps=fv.train_steps, epochs=None)
  if fv.epochs is not None:
    overrides.update(epochs=fv.epochs, train_steps=None)
  if fv.learning_rate is not None:
    overrides.update(learning_rate=fv.learning_rate,
                     lr_batch_size=overrides.get("batch_size", config.batch_size))
  try:
    config = dataclasses.replace(config, **overrides).check()
  except ValueError as e:
    raise SetupError(str(e)) from None
  options = RunOptions(
      config_name=name, strategy=fv.strategy, tpu=fv.tpu, model_dir=fv.model_dir,
      export_dir=fv.export_dir, export_tflite=fv.export_tflite, data_dir=fv.data_dir,
      mixed_precision=fv.mixed_precision, seed=fv.seed, image_size=fv.image_size,
      steps_per_epoch=fv.steps_per_epoch, eval_steps=fv.eval_steps,
      steps_per_execution=fv.steps_per_execution,
      training_steps_multiplier=fv.training_steps_multiplier,
      verbose=fv.verbose if fv.verbose == "auto" else int(fv.verbose))
  return config, options


# --------------------------------------------------------------------------
# Schedules.


@keras.utils.register_keras_serializable(package="keras_rigl_examples")
class WarmupPiecewiseDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up from 0, then a constant rate multiplied at boundaries.

  ``lr(step) = peak * step / warmup_steps`` while ``step < warmup_steps``,
  then ``peak * multipliers[i]`` from ``boundaries[i]`` on (``peak`` before
  the first boundary): the authors' ImageNet schedule (``lr_schedule`` in
  imagenet_train_eval.py) and, without warm-up, their CIFAR one.

  Args:
    peak: the learning rate after warm-up.
    warmup_steps: length of the linear warm-up (0: none).
    boundaries: increasing steps at which the rate changes.
    multipliers: the factor of `peak` from each boundary on.

  Example:
  >>> lr = WarmupPiecewiseDecay(1.6, 10, [30, 70], [0.1, 0.01])
  >>> [round(float(lr(s)), 4) for s in (0, 5, 10, 30, 80)]
  [0.0, 0.8, 1.6, 0.16, 0.016]
  """

  def __init__(self, peak, warmup_steps=0, boundaries=(), multipliers=()):
    super().__init__()
    if len(boundaries) != len(multipliers):
      raise ValueError(f"boundaries ({len(boundaries)}) and multipliers "
                       f"({len(multipliers)}) must have the same length.")
    self.peak = float(peak)
    self.warmup_steps = int(warmup_steps)
    self.boundaries = [int(b) for b in boundaries]
    self.multipliers = [float(m) for m in multipliers]

  def __call__(self, step):
    step = tf.cast(tf.convert_to_tensor(step), tf.float32)
    rate = tf.constant(self.peak, tf.float32)
    for boundary, multiplier in zip(self.boundaries, self.multipliers):
      rate = tf.where(step >= boundary, self.peak * multiplier, rate)
    if self.warmup_steps > 0:
      rate = tf.where(step < self.warmup_steps,
                      self.peak * step / self.warmup_steps, rate)
    return rate

  def get_config(self):
    return {"peak": self.peak, "warmup_steps": self.warmup_steps,
            "boundaries": list(self.boundaries), "multipliers": list(self.multipliers)}


@dataclasses.dataclass(frozen=True)
class Plan:
  """A config turned into steps for one run (after batch size and multiplier)."""
  train_steps: int
  steps_per_epoch: int  # Steps of one Keras epoch.
  epochs: int  # Keras epochs (the last one may stop early).
  peak_learning_rate: float
  warmup_steps: int
  lr_boundaries: Tuple[int, ...]
  lr_multipliers: Tuple[float, ...]
  begin_step: int
  end_step: int
  pruning_begin_step: int
  pruning_end_step: int
  pruning_freq: int


def make_plan(config, info, steps_per_epoch=None, multiplier=1.0):
  """Every step count of the run, from a `Config` and the dataset's size.

  Epoch-valued quantities use ``num_train / batch_size`` steps per epoch (as
  the authors' ``current_epoch``); `multiplier` scales the run length and
  every step- or epoch-valued schedule (fractions follow the length).

  Example:
  >>> info = kr.data.dataset_info("imagenet2012")
  >>> plan = make_plan(configs.get("imagenet_resnet50"), info)
  >>> plan.train_steps, plan.warmup_steps, plan.lr_boundaries, plan.end_step
  (32000, 1564, (9384, 21895, 28151), 25000)
  """
  data_epoch = info.num_train / config.batch_size  # Steps per pass, fractional.
  if config.train_steps is not None:
    steps = config.train_steps * multiplier
  else:
    steps = config.epochs * max(1, info.num_train // config.batch_size) * multiplier
  steps = max(1, int(round(steps)))
  spe = min(steps_per_epoch or max(1, info.num_train // config.batch_size), steps)
  scale = {"epochs": data_epoch * multiplier, "steps": multiplier,
           "fraction": steps}[config.lr_unit]
  boundaries = tuple(int(round(b * scale)) for b in config.lr_boundaries)
  multipliers = tuple(round(config.lr_decay ** (i + 1), 12) for i in range(len(boundaries)))

  def step_or_fraction(step, fraction):
    return int(round(step * multiplier)) if step is not None else int(round(fraction * steps))

  # Pruning happens at multiples of its frequency: put the window's ends on
  # such steps, or the last pruning step would stop short of the target.
  pruning_freq = config.pruning_freq or config.update_freq
  on_grid = lambda step: int(round(step / pruning_freq)) * pruning_freq

  return Plan(
      train_steps=steps, steps_per_epoch=spe, epochs=int(math.ceil(steps / spe)),
      peak_learning_rate=config.peak_learning_rate(),
      warmup_steps=int(round(config.lr_warmup * scale)),
      lr_boundaries=boundaries, lr_multipliers=multipliers,
      begin_step=int(round(config.begin_step * multiplier)),
      end_step=step_or_fraction(config.end_step, config.end_fraction),
      pruning_begin_step=on_grid(step_or_fraction(config.pruning_begin_step,
                                                  config.pruning_begin_fraction)),
      pruning_end_step=on_grid(step_or_fraction(config.pruning_end_step,
                                                config.pruning_end_fraction)),
      pruning_freq=pruning_freq)


# --------------------------------------------------------------------------
# Strategy and data.


def make_strategy(name, tpu=None):
  """The tf.distribute strategy for --strategy (and --tpu)."""
  if name == "multi_worker":
    # Before anything starts the TF runtime: collectives are configured then.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    workers = sum(len(tasks) for tasks in
                  strategy.cluster_resolver.cluster_spec().as_dict().values())
    if kr.keras_flavour == "keras3" and workers > 1:
      raise SetupError(
          "Keras 3's model.fit does not run under a multi-worker "
          "MultiWorkerMirroredStrategy (keras-team/keras#20585). Use tf_keras: "
          "TF_USE_LEGACY_KERAS=1 python examples/train.py ...")
    return strategy
  gpus = tf.config.list_logical_devices("GPU")
  if name == "auto":
    name = "tpu" if tpu else ("mirrored" if len(gpus) > 1 else "one_device")
  if name == "one_device":
    # TensorFlow's default strategy: one replica on the default device (the
    # first GPU if any). tf_keras' BackupAndRestore rejects OneDeviceStrategy.
    return tf.distribute.get_strategy()
  if name == "mirrored":
    if gpus:
      return tf.distribute.MirroredStrategy([d.name for d in gpus])
    # CPU replicas: plain reductions. CPU collectives key their ops by a
    # counter that restarts with every MirroredStrategy, so a second strategy
    # over the same CPUs in one process would collide with the first.
    return tf.distribute.MirroredStrategy(
        [d.name for d in tf.config.list_logical_devices("CPU")],
        cross_device_ops=tf.distribute.ReductionToOneDevice())
  if name == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise SetupError(f"Unknown strategy {name!r}; use one of {STRATEGIES}.")


def _is_tpu(strategy):
  return isinstance(strategy, (tf.distribute.TPUStrategy,
                               tf.distribute.experimental.TPUStrategy))


def _reads_per_worker(strategy):
  """Strategies whose workers should each read their own shard of the data."""
  return _is_tpu(strategy) or isinstance(
      strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy):
  """False on the non-chief workers of a multi-worker run."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or _is_tpu(strategy):
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type in (None, "chief"):
    return True
  has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
  return task_type == "worker" and task_id == 0 and not has_chief


def make_datasets(config, options, strategy, info):
  """(train, fit_input, eval): global-batch tf.data datasets, and what fit reads.

  `fit` gets the plain global-batch dataset (Keras splits it over the
  replicas) except on TPU / multi-worker, where every worker reads its own
  shard through `kr.data.load(..., input_context=...)`. The RigL scheduler
  always gets the plain dataset.
  """
  size = options.image_size

  def resize(dataset):
    if not size:
      return dataset
    return dataset.map(lambda x, y: (tf.image.resize(x, [size, size]), y),
                       num_parallel_calls=tf.data.AUTOTUNE)

  common = dict(data_dir=options.data_dir, seed=options.seed)
  train = resize(kr.data.load(config.dataset, "train", config.batch_size,
                              repeat=True, **common))
  fit_input = train
  if _reads_per_worker(strategy):
    fit_input = kr.data.distribute(strategy, lambda context: resize(kr.data.load(
        config.dataset, "train", config.batch_size, repeat=True,
        input_context=context, **common)))
  eval_batch = config.eval_batch_size or config.batch_size
  replicas = strategy.num_replicas_in_sync
  # TPUs need static shapes; Keras 3 under MirroredStrategy fails on a last
  # batch that does not split evenly over the replicas.
  drop = _is_tpu(strategy) or (replicas > 1 and info.num_eval % eval_batch % replicas != 0)
  if drop and not _is_tpu(strategy):
    logging.warning("Evaluation skips the last %d examples (a batch that does not "
                    "split over %d replicas).", info.num_eval % eval_batch, replicas)
  evaluation = resize(kr.data.load(config.dataset, "eval", eval_batch,
                                   drop_remainder=drop, **common))
  return train, fit_input, evaluation


# --------------------------------------------------------------------------
# Model.


@keras.utils.register_keras_serializable(package="keras_rigl_examples")
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
    super().__init__(name=name, **kwargs)
    self.label_smoothing = float(label_smoothing)

  def call(self, y_true, y_pred):
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


def build_model(name, input_shape, num_classes):
  """A fresh dense model from keras_rigl.models."""
  models = kr.models
  builders = {
      "lenet300_100": lambda: models.lenet300_100(input_shape, num_classes),
      "lenet5": lambda: models.lenet5(input_shape, num_classes),
      "wide_resnet_22_2": lambda: models.wide_resnet(
          22, 2, input_shape=input_shape, num_classes=num_classes),
      "resnet50": lambda: models.resnet50(input_shape, num_classes),
      "mobilenet_v1": lambda: models.mobilenet_v1(
          input_shape=input_shape, num_classes=num_classes),
      "mobilenet_v2": lambda: models.mobilenet_v2(
          input_shape=input_shape, num_classes=num_classes),
  }
  if name not in builders:
    raise ValueError(f"Unknown model {name!r}; use one of {sorted(builders)}.")
  return builders[name]()


def _output_layer_names(model):
  return {t._keras_history[0].name for t in model.outputs}  # pylint: disable=protected-access


def rebuild(model, width=1.0, weight_decay=0.0, decay_depthwise=True):
  """A copy of a Functional model with narrower layers and/or weight decay.

  `width` scales the units/filters of every Dense and Conv layer except the
  output layer (depthwise convs follow their input). `weight_decay` puts
  ``L2(weight_decay / 2)`` on every kernel (``depthwise_regularizer`` on
  depthwise convs unless `decay_depthwise` is False): the authors'
  ``l2_regularizer(wd)`` = ``wd * sum(w^2) / 2``. Weights are freshly
  initialised.
  """
  if width == 1.0 and not weight_decay:
    return model
  outputs = _output_layer_names(model)
  regularizer = keras.regularizers.L2(weight_decay / 2.0) if weight_decay else None
  depthwise_types = tuple(getattr(keras.layers, n) for n in ("DepthwiseConv1D", "DepthwiseConv2D")
                          if hasattr(keras.layers, n))

  def clone(layer):
    config = layer.get_config()
    depthwise = isinstance(layer, depthwise_types)
    if width != 1.0 and layer.name not in outputs and not depthwise:
      for key in ("units", "filters"):
        if config.get(key):
          config[key] = max(1, int(round(config[key] * width)))
    if regularizer is not None:
      if depthwise:
        if decay_depthwise:
          config["depthwise_regularizer"] = regularizer
      elif "kernel_regularizer" in config and not isinstance(layer, keras.layers.Embedding):
        config["kernel_regularizer"] = regularizer
    return layer.__class__.from_config(config)

  return keras.models.clone_model(model, clone_function=clone)


def sparsify_kwargs(config, model):
  """`kr.sparsify` arguments that keep the config's dense layers dense."""
  depthwise_types = tuple(getattr(keras.layers, n) for n in ("DepthwiseConv1D", "DepthwiseConv2D")
                          if hasattr(keras.layers, n))
  dense = set(config.dense_layers)

  def exclude(layer):
    return layer.name in dense or (config.dense_depthwise and isinstance(layer, depthwise_types))

  names = {layer.name for layer in model.layers}
  custom = None
  if config.distribution == "uniform":
    custom = {n: 0.0 for n in config.uniform_dense_layers if n in names} or None
  return dict(distribution=config.distribution, erk_power_scale=config.erk_power_scale,
              custom_sparsity=custom, exclude=exclude)


def small_dense_width(config, input_shape, num_classes, seed=0):
  """Width factor whose dense model has the sparse model's kernel-weight count.

  The target is the number of non-zero kernel weights that `kr.sparsify`
  gives the full model (dense layers included); the factor is found by
  bisection (kernel weights grow with width, roughly quadratically).
  """
  keras.utils.set_random_seed(seed)
  full = build_model(config.model, input_shape, num_classes)
  sparse = kr.sparsify(full, config.sparsity, seed=seed, **sparsify_kwargs(config, full))
  target = kr.count_flops(sparse).nnz
  del sparse

  def params(width):
    return kr.count_flops(rebuild(full, width=width)).params

  low, high = 0.0, 1.0
  for _ in range(14):
    middle = (low + high) / 2
    if params(middle) > target:
      high = middle
    else:
      low = middle
  candidates = [w for w in (low, high) if w > 0]
  return min(candidates, key=lambda w: abs(params(w) - target))


def build_training_model(config, input_shape, num_classes, seed=0,
                         small_dense_factor=None):
  """(model, dense reference model) for the config's method; call in scope.

  dense: the plain model. small_dense: `rebuild(width=small_dense_factor)`.
  static / set / rigl: `kr.sparsify` with random masks. pruning:
  `kr.sparsify(mask_init="dense")` (all-ones masks that the pruning
  scheduler closes).
  """
  keras.utils.set_random_seed(seed)
  reference = build_model(config.model, input_shape, num_classes)
  decay = dict(weight_decay=config.weight_decay, decay_depthwise=config.decay_depthwise)
  if config.method == "dense":
    return rebuild(reference, **decay), reference
  if config.method == "small_dense":
    return rebuild(reference, width=small_dense_factor, **decay), reference
  base = rebuild(reference, **decay)
  mask_init = "dense" if config.method == "pruning" else "random"
  model = kr.sparsify(base, config.sparsity, seed=seed, mask_init=mask_init,
                      **sparsify_kwargs(config, base))
  return model, reference


def make_scheduler(config, plan, train, seed=0):
  """The mask callback of the method (None for dense, small_dense, static)."""
  end_step = max(plan.end_step, plan.begin_step)
  if config.method == "rigl":
    return kr.RigLScheduler(
        train, update_freq=config.update_freq, drop_fraction=config.drop_fraction,
        drop_fraction_schedule=config.drop_fraction_schedule,
        begin_step=plan.begin_step, end_step=end_step, grow_init=config.grow_init,
        seed=seed)
  if config.method == "set":
    return kr.SETScheduler(
        update_freq=config.update_freq, drop_fraction=config.drop_fraction,
        drop_fraction_schedule=config.drop_fraction_schedule,
        begin_step=plan.begin_step, end_step=end_step, grow_init=config.grow_init,
        seed=seed)
  if config.method == "pruning":
    return kr.MagnitudePruningScheduler(
        0.0, None, plan.pruning_begin_step,
        max(plan.pruning_end_step, plan.pruning_begin_step), plan.pruning_freq)
  return None


# --------------------------------------------------------------------------
# Callbacks.


class StopAtStep(keras.callbacks.Callback):
  """Stops `fit` once the optimizer has made `train_steps` steps."""

  def __init__(self, train_steps):
    super().__init__()
    self.train_steps = int(train_steps)

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch_start = int(self.model.optimizer.iterations.numpy())

  def on_train_batch_end(self, batch, logs=None):
    # Counted without a device read; confirmed by one near the end.
    if self._epoch_start + batch + 1 >= self.train_steps:
      if int(self.model.optimizer.iterations.numpy()) >= self.train_steps:
        self.model.stop_training = True


class TrainingMonitor(keras.callbacks.Callback):
  """TensorBoard scalars and the history that the report plots.

  Writes ``learning_rate``, ``sparsity/total`` and ``sparsity/<layer>`` at
  the end of every epoch and ``mask/change``, ``mask/drop_fraction`` at every
  mask update of `scheduler`, with `tf.summary` into `log_dir`. Keeps
  ``history`` (one dict per epoch: epoch, step, learning_rate, sparsity and
  Keras' logs) and ``mask_updates`` (step, mask_change, drop_fraction); with
  `history_path` both survive a resumed run.
  """

  def __init__(self, learning_rate, scheduler=None, log_dir=None, history_path=None):
    super().__init__()
    self.learning_rate = learning_rate
    self.scheduler = scheduler
    self.log_dir = log_dir
    self.history_path = history_path
    self.history = []
    self.mask_updates = []
    self._writer = None

  def _step(self):
    return int(self.model.optimizer.iterations.numpy())

  def on_train_begin(self, logs=None):
    if self.log_dir:
      self._writer = tf.summary.create_file_writer(self.log_dir)
    step = self._step()  # After BackupAndRestore, which runs first.
    if self.history_path and tf.io.gfile.exists(self.history_path):
      with tf.io.gfile.GFile(self.history_path) as f:
        saved = json.load(f)
      self.history = [h for h in saved.get("history", []) if h["step"] <= step]
      self.mask_updates = [u for u in saved.get("mask_updates", []) if u["step"] <= step]
    self._updates_seen = self.scheduler.updates if self.scheduler else 0

  # A batch-begin hook, after the scheduler's (which makes the updates there):
  # batch-end hooks would stop Keras 3 dispatching them asynchronously.
  def on_train_batch_begin(self, batch, logs=None):
    if self.scheduler is None or self.scheduler.updates == self._updates_seen:
      return
    self._updates_seen = self.scheduler.updates
    step = getattr(self.scheduler, "last_update_step", None)
    step = self._step() if step is None else int(step)
    update = {"step": step, "mask_change": float(self.scheduler.last_mask_change)}
    if hasattr(self.scheduler, "current_drop_fraction"):
      update["drop_fraction"] = float(self.scheduler.current_drop_fraction(step))
    self.mask_updates.append(update)
    if self._writer is not None:
      with self._writer.as_default(step=step):
        tf.summary.scalar("mask/change", update["mask_change"])
        if "drop_fraction" in update:
          tf.summary.scalar("mask/drop_fraction", update["drop_fraction"])

  def on_epoch_end(self, epoch, logs=None):
    step = self._step()
    table = kr.sparsity_report(self.model)
    layers = {f"{r.name}/{r.weight}" if r.weight != "kernel" else r.name: r.sparsity
              for r in table}
    sparsity = table.sparsity
    entry = {"epoch": epoch + 1, "step": step,
             "learning_rate": float(self.learning_rate(step)), "sparsity": float(sparsity)}
    for key, value in (logs or {}).items():
      if np.ndim(value) == 0:
        entry[key] = float(value)
    self.history.append(entry)
    if self._writer is not None:
      with self._writer.as_default(step=step):
        tf.summary.scalar("learning_rate", entry["learning_rate"])
        tf.summary.scalar("sparsity/total", sparsity)
        for name, value in layers.items():
          tf.summary.scalar(f"sparsity/{name}", value)
      self._writer.flush()
    if self.history_path:
      with tf.io.gfile.GFile(self.history_path, "w") as f:
        json.dump({"history": self.history, "mask_updates": self.mask_updates}, f)

  def on_train_end(self, logs=None):
    if self._writer is not None:
      self._writer.close()
      self._writer = None


def has_tensorboard():
  """tf.summary writes nothing without the `tensorboard` package (not a TF
  dependency since 2.21); we then skip the TensorBoard logs."""
  return importlib.util.find_spec("tensorboard") is not None


def make_callbacks(model_dir, plan, schedule, scheduler, validate_every_epoch):
  """Callbacks in the order they must run; the monitor is returned too.

  BackupAndRestore comes first so that the schedulers and the monitor see
  the restored step in on_train_begin.
  """
  tensorboard = bool(model_dir) and has_tensorboard()
  if model_dir and not tensorboard:
    logging.warning("No TensorBoard logs: `pip install tensorboard` to get them.")
  callbacks = []
  if model_dir:
    callbacks.append(keras.callbacks.BackupAndRestore(
        os.path.join(model_dir, "backup"), delete_checkpoint=False))
  if scheduler is not None:
    callbacks.append(scheduler)
  if plan.train_steps % plan.steps_per_epoch:
    # Only a partial last epoch needs a batch-end hook (which makes Keras 3
    # run every batch-end hook synchronously).
    callbacks.append(StopAtStep(plan.train_steps))
  monitor = TrainingMonitor(
      schedule, scheduler,
      log_dir=os.path.join(model_dir, "logs", "rigl") if tensorboard else None,
      history_path=os.path.join(model_dir, "history.json") if model_dir else None)
  callbacks.append(monitor)
  if model_dir:
    if validate_every_epoch:
      checkpoint = keras.callbacks.ModelCheckpoint(
          os.path.join(model_dir, "checkpoints", "best.weights.h5"),
          monitor="val_accuracy", mode="max", save_best_only=True,
          save_weights_only=True)
    else:
      checkpoint = keras.callbacks.ModelCheckpoint(
          os.path.join(model_dir, "checkpoints", "last.weights.h5"),
          save_weights_only=True)
    callbacks.append(checkpoint)
  if tensorboard:
    callbacks.append(keras.callbacks.TensorBoard(
        os.path.join(model_dir, "logs"), write_graph=False, profile_batch=0))
  return callbacks, monitor


# --------------------------------------------------------------------------
# The run.


def _mixed_precision_policy(strategy):
  if _is_tpu(strategy):
    return "mixed_bfloat16"
  if tf.config.list_logical_devices("GPU"):
    return "mixed_float16"
  logging.warning("--mixed_precision on CPU: computing in bfloat16, which is "
                  "slower than float32 on CPUs without bfloat16 units.")
  return "mixed_bfloat16"


def _default_model_dir(options, config):
  stamp = time.strftime("%Y%m%d-%H%M%S")
  return os.path.join(tempfile.gettempdir(), "keras_rigl",
                      f"{stamp}-{options.config_name}-{config.method}")


def run(config, options):
  """Trains `config` as `options` says; prints and returns the report dict."""
  started = time.time()
  config.check()
  info = kr.data.dataset_info(config.dataset)
  input_shape = tuple(info.input_shape)
  if options.image_size:
    input_shape = (options.image_size, options.image_size, input_shape[-1])
  strategy = make_strategy(options.strategy, options.tpu)
  replicas = strategy.num_replicas_in_sync
  for name in ("batch_size", "eval_batch_size"):
    value = getattr(config, name) or config.batch_size
    if value % replicas:
      raise SetupError(f"{name}={value} does not split over {replicas} replicas; "
                       f"use a multiple of {replicas}.")
  if options.steps_per_execution > 1 and config.method in ("set", "rigl", "pruning"):
    freq = config.update_freq if config.method != "pruning" else (
        config.pruning_freq or config.update_freq)
    if freq % options.steps_per_execution:
      raise SetupError(f"--steps_per_execution={options.steps_per_execution} must "
                       f"divide the update frequency {freq}.")
  plan = make_plan(config, info, options.steps_per_epoch, options.training_steps_multiplier)
  model_dir = None
  if options.write_files:
    model_dir = options.model_dir or _default_model_dir(options, config)
    if not is_chief(strategy):
      # Each worker its own files; only the chief's are the run's.
      model_dir = os.path.join(model_dir, f"worker_{strategy.cluster_resolver.task_id}")
  logging.info("%s: %s", options.config_name, config)
  logging.info("plan: %s", plan)

  previous_policy = keras.mixed_precision.global_policy()
  try:
    if options.mixed_precision:
      keras.mixed_precision.set_global_policy(_mixed_precision_policy(strategy))
    train, fit_input, evaluation = make_datasets(config, options, strategy, info)
    small_dense_factor = None
    if config.method == "small_dense":
      small_dense_factor = small_dense_width(config, input_shape, info.num_classes,
                                             options.seed)
      logging.info("small_dense: width x%.4f", small_dense_factor)
    with strategy.scope():
      model, reference = build_training_model(
          config, input_shape, info.num_classes, options.seed, small_dense_factor)
      schedule = WarmupPiecewiseDecay(plan.peak_learning_rate, plan.warmup_steps,
                                      plan.lr_boundaries, plan.lr_multipliers)
      optimizer = keras.optimizers.SGD(schedule, momentum=config.momentum,
                                       nesterov=config.nesterov)
      metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
      if info.num_classes > 10:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5_accuracy"))
      model.compile(optimizer, SparseCrossEntropy(config.label_smoothing),
                    metrics=metrics, steps_per_execution=options.steps_per_execution)
    scheduler = make_scheduler(config, plan, train, options.seed)
    callbacks, monitor = make_callbacks(model_dir, plan, schedule, scheduler,
                                        config.eval_every == 1)
    model.fit(fit_input, epochs=plan.epochs, steps_per_epoch=plan.steps_per_epoch,
              validation_data=evaluation, validation_steps=options.eval_steps,
              validation_freq=config.eval_every, callbacks=callbacks,
              verbose=options.verbose)
    test = model.evaluate(evaluation, steps=options.eval_steps, return_dict=True,
                          verbose=0)
    steps = int(model.optimizer.iterations.numpy())
    report = report_lib.build_report(
        model, reference, method=config.method, steps=steps,
        batch_size=config.batch_size, update_freq=config.update_freq,
        end_step=plan.end_step, pruning_begin_step=plan.pruning_begin_step,
        pruning_end_step=plan.pruning_end_step, pruning_freq=plan.pruning_freq,
        test_metrics=test, history=monitor.history, mask_updates=monitor.mask_updates,
        config=options.config_name, setup=dataclasses.asdict(config),
        options=dataclasses.asdict(options), plan=dataclasses.asdict(plan),
        run={"keras": kr.keras_flavour, "strategy": type(strategy).__name__,
             "replicas": replicas, "seconds": time.time() - started,
             "small_dense_width": small_dense_factor,
             "mixed_precision": keras.mixed_precision.global_policy().name})
    if options.export_dir and is_chief(strategy):
      report.setdefault("files", {})["saved_model"] = kr.export(
          model, os.path.join(options.export_dir, "saved_model"))
      if options.export_tflite:
        report["files"]["tflite"] = kr.export(
            model, os.path.join(options.export_dir, "model.tflite"), format="tflite")
    if model_dir:
      files = report.setdefault("files", {})
      files["figure"] = os.path.join(model_dir, "report.png")
      files["report"] = os.path.join(model_dir, "report.json")
      if has_tensorboard():
        files["tensorboard"] = os.path.join(model_dir, "logs")
      report_lib.save_figure(report, files["figure"])
      report_lib.save_json(report, files["report"])
    if options.print_report:
      print(report_lib.format_report(report), flush=True)
    return report
  finally:
    keras.mixed_precision.set_global_policy(previous_policy)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # Problems with what was asked (bad combinations, missing data) end with
  # their message, which says what to do, not with a traceback.
  try:
    config, options = setup_from_flags(FLAGS)
    run(config, options)
  except (SetupError, kr.data.DataNotFoundError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
