r"""Trains a network with RigL, SET, SNFS, static masks, SNIP, pruning, or dense.

The defaults run the embedded demo: LeNet-300-100 on Fashion-MNIST (read
offline from the Debian package), RigL at sparsity 0.9 with the ERK
distribution, 10 epochs, then print a report (test accuracy, per-layer
sparsity, FLOPs and model size relative to dense) and save ``report.png`` and
``report.json`` in --model_dir:

  python examples/train.py
  python examples/train.py --method=set --sparsity=0.95 --distribution=uniform
  python examples/train.py --method=snfs --prune_rate=0.5 --snfs_momentum=0.9
  python examples/train.py --method=rigl --redistribution=momentum
  python examples/train.py --sparsity=0.98 --distribution=uniform --min_fan_in=1
  python examples/train.py --method=snip --snip_distribution=global

The authors' setups are named configs (keras_rigl.recipes.configs); explicit
flags override single values:

  python examples/train.py --config=imagenet_resnet50 --data_dir=DIR \
      --strategy=tpu --tpu=NAME --model_dir=gs://BUCKET/run --mixed_precision
  python examples/train.py --config=cifar10_wrn_22_2 --data_dir=DIR \
      --training_steps_multiplier=2

Every flag is checked before the first step. A run with --model_dir resumes
where it stopped (keras.callbacks.BackupAndRestore, at epoch ends) when
started again with the same flags, and reads the same batches as an
uninterrupted run. TensorFlow's C++ log lines are hidden unless --tf_verbose
(or TF_CPP_MIN_LOG_LEVEL) is given. This file is the command line only: the
training itself is `keras_rigl.recipes.run`.
"""

import os
import signal
import sys

if __package__ in (None, ""):
  # `python examples/train.py`: make `keras_rigl` and `examples` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Before anything imports TensorFlow: keep its C++ start-up lines off the
# screen unless asked for (examples/quiet.py).
from examples import quiet  # pylint: disable=g-import-not-at-top,wrong-import-position
if __name__ == "__main__":
  quiet.import_tensorflow(quiet.wants_tf_logs(sys.argv))

# pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

import keras_rigl as kr
from keras_rigl._keras import keras
from keras_rigl.recipes import configs
# What tests and older scripts import from here.
from keras_rigl.recipes.builders import build_model, build_training_model  # pylint: disable=unused-import
from keras_rigl.recipes.builders import make_scheduler, sparsify_kwargs  # pylint: disable=unused-import
from keras_rigl.recipes.errors import SetupError
from keras_rigl.recipes.losses import SparseCrossEntropy  # pylint: disable=unused-import
from keras_rigl.recipes.plan import make_plan, Plan  # pylint: disable=unused-import
from keras_rigl.recipes.regularization import rebuild  # pylint: disable=unused-import
from keras_rigl.recipes.runner import run, RunOptions, validate
from keras_rigl.recipes.schedules import WarmupPiecewiseDecay  # pylint: disable=unused-import
from keras_rigl.recipes.small_dense import small_dense_width  # pylint: disable=unused-import
from keras_rigl.recipes.strategy import STRATEGIES
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS


# What to train. Flags left unset take the value of the config.
flags.DEFINE_enum("config", None, list(configs.CONFIGS),
                  "Named setup whose values are the defaults of the flags below. "
                  "Default: the setup for --model/--dataset "
                  f"(else {configs.DEFAULT}).")
flags.DEFINE_enum("model", None, configs.MODELS, "Architecture.")
flags.DEFINE_enum("dataset", None, configs.DATASETS, "Dataset.")


class _MethodParser(flags.EnumParser):
  """--method: a method of the registry (`keras_rigl.methods`), read when the
  flag is parsed, so a method registered after this import is accepted."""

  def __init__(self):
    super().__init__(list(kr.methods.names()))

  def parse(self, argument):
    self.enum_values = list(kr.methods.names())
    return super().parse(argument)


flags.DEFINE(_MethodParser(), "method", None,
             "; ".join(f"{m}: {kr.methods.get(m).summary}" for m in kr.methods.names()) +
             " (and any method registered with keras_rigl.methods.register).",
             serializer=flags.ArgumentSerializer())
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
flags.DEFINE_enum("lr_schedule", None, configs.LR_SCHEDULES, "step: the config's "
                  "boundaries and decay; cosine: cosine decay to 0 at the end of the run.")
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
flags.DEFINE_enum("grow_scores", None, ["step", "data"],
                  "RigL's grow scores: step (default: the train step's own gradient "
                  "w.r.t. W * M, the update inside the compiled train step, as the "
                  "authors' TF1 code) or data (a separate forward/backward pass over a "
                  "training batch, host-scheduled, as rigl_tf2; needed by "
                  "--redistribution).")
# Sparse momentum (--method=snfs) and layer-wise redistribution (rigl, snfs).
flags.DEFINE_string("redistribution", None,
                    "none, momentum or gradient: regrow each update's total across "
                    "layers in proportion to their mean |momentum| / |gradient| "
                    "(layer counts move, the total stays). Default: none for rigl, "
                    "momentum for snfs.")
flags.DEFINE_float("prune_rate", None, "snfs: initial fraction of each layer's active "
                   "weights pruned per update (decays with --drop_fraction_schedule).")
flags.DEFINE_float("snfs_momentum", None, "snfs: EMA coefficient of the dense gradient, "
                   "in [0, 1).")
flags.DEFINE_integer("min_fan_in", None, "RigL/SET: fewest active inputs every output "
                     "unit keeps through mask updates (default 0: no minimum; 1 keeps "
                     "every unit connected).")
flags.DEFINE_integer("snip_batches", None, "SNIP: training batches the connection "
                     "sensitivity is summed over (default 1).")
flags.DEFINE_string("snip_distribution", None, "SNIP: global (one ranking over all "
                    "layers, as Lee et al.), uniform, er or erk (default: "
                    "--distribution, the per-layer counts of the other methods).")
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
flags.DEFINE_bool("jit_compile", None, "Compile the train step with XLA, as on a "
                  "TPU (default: Keras' choice, no XLA on CPU).")
flags.DEFINE_integer("cpu_devices", None, "Split the CPU into this many logical "
                     "devices before TensorFlow starts, so that --strategy=mirrored "
                     "runs that many replicas without GPUs (e.g. 2).", lower_bound=1)
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
                 "label_smoothing", "lr_schedule", "update_freq", "drop_fraction",
                 "drop_fraction_schedule", "begin_step", "end_step", "pruning_begin_step",
                 "pruning_end_step", "pruning_freq", "eval_every", "min_fan_in",
                 "snip_batches", "snip_distribution")
_CONFIG_FLAGS += ("redistribution", "prune_rate", "snfs_momentum", "grow_scores")

flags.DEFINE_bool("tf_verbose", False, "Show TensorFlow's C++ info/warning log lines "
                  "(hidden by default; TF_CPP_MIN_LOG_LEVEL, if set, wins).")

# Test-only fault injection (tests/test_resume.py): SIGKILL at this step.
_KILL_AT_STEP_ENV = "KERAS_RIGL_TEST_KILL_AT_STEP"


class _KillAtStep(keras.callbacks.Callback):
  def __init__(self, step):
    super().__init__()
    self.step = int(step)

  def on_train_batch_begin(self, batch, logs=None):
    if int(self.model.optimizer.iterations.numpy()) >= self.step:
      os.kill(os.getpid(), signal.SIGKILL)


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
      steps_per_execution=fv.steps_per_execution, jit_compile=fv.jit_compile,
      cpu_devices=fv.cpu_devices,
      training_steps_multiplier=fv.training_steps_multiplier,
      verbose=fv.verbose if fv.verbose == "auto" else int(fv.verbose))
  return config, options


# Flags that only one kind of method reads: given with another, they would be
# silently ignored.
_METHOD_FLAGS = {"prune_rate": ("snfs",), "snfs_momentum": ("snfs",),
                 "drop_fraction": ("rigl", "set"),
                 "pruning_begin_step": ("pruning",), "pruning_end_step": ("pruning",),
                 "pruning_freq": ("pruning",)}


def check_method_flags(config, flag_values=FLAGS):
  """SetupError for a method-specific flag given with a method that ignores it."""
  for name, methods in _METHOD_FLAGS.items():
    if flag_values[name].present and config.method not in methods:
      wanted = " or ".join(f"--method={m}" for m in methods)
      raise SetupError(f"--{name} only applies to {wanted}, not --method={config.method}; "
                       f"drop --{name} or use {wanted}.")


def _quiet(verbose):
  """Python-side TF/absl chatter follows --tf_verbose too."""
  if not verbose:
    tf.get_logger().setLevel("ERROR")
    logging.set_verbosity(logging.WARNING)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  _quiet(FLAGS.tf_verbose)
  # Problems with what was asked (bad combinations, missing data) end with
  # their message, which says what to do, not with a traceback.
  try:
    config, options = setup_from_flags(FLAGS)
    check_method_flags(config, FLAGS)
    validate(config, options)
    extra = []
    if os.environ.get(_KILL_AT_STEP_ENV):
      extra.append(_KillAtStep(os.environ[_KILL_AT_STEP_ENV]))
    run(config, options, callbacks=extra)
  except (SetupError, kr.data.DataNotFoundError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
