"""One training run of a `Config`: check everything, train, report, export.

`validate(config, options)` checks every setting that can be checked before
the first step (values, combinations, paths) and raises `SetupError` naming
the setting and the fix; `run(config, options)` validates, builds the
strategy, data, model, optimizer and callbacks, trains with `model.fit`,
and returns (and prints) the end-of-run report. A run with a `model_dir`
that holds a backup resumes where it stopped, reading exactly the batches an
uninterrupted run would. Settings are named as examples/train.py's flags.

Example:
>>> import tempfile
>>> from keras_rigl import recipes
>>> config = recipes.get_config("fashion_mnist_lenet300_100").replace(
...     train_steps=2, epochs=None, batch_size=32)
>>> options = recipes.RunOptions(steps_per_epoch=2, eval_steps=1, verbose=0,
...                              model_dir=tempfile.mkdtemp(), print_report=False)
>>> report = recipes.run(config, options)
>>> report["steps"], round(report["sparsity"]["total"], 2)
(2, 0.9)
"""

import dataclasses
import os
import tempfile
import time
from typing import Optional

from absl import logging

from keras_rigl import backend
from keras_rigl import data as _data
from keras_rigl.export import export as export_model
from keras_rigl.methods import registry as _registry
from keras_rigl._keras import FLAVOUR
from keras_rigl._keras import keras
from keras_rigl.recipes import callbacks as callbacks_lib
from keras_rigl.recipes import configs
from keras_rigl.recipes import report as report_lib
from keras_rigl.recipes import strategy as strategy_lib
from keras_rigl.recipes import xla
from keras_rigl.recipes.builders import build_training_model
from keras_rigl.recipes.builders import make_scheduler
from keras_rigl.recipes.errors import SetupError
from keras_rigl.recipes.inputs import make_datasets
from keras_rigl.recipes.losses import SparseCrossEntropy
from keras_rigl.recipes.plan import make_plan
from keras_rigl.recipes.schedules import WarmupCosineDecay
from keras_rigl.recipes.schedules import WarmupPiecewiseDecay
from keras_rigl.recipes.small_dense import small_dense_width




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
  # None: Keras' own default (no XLA on CPU); True: the train step runs under XLA.
  jit_compile: Optional[bool] = None
  # Logical CPU devices to split the CPU into (MirroredStrategy without GPUs).
  cpu_devices: Optional[int] = None
  training_steps_multiplier: float = 1.0
  verbose: object = "auto"
  write_files: bool = True  # report.png/json, checkpoints, TensorBoard.
  print_report: bool = True


def _local(path):
  return "://" not in path  # gs://, s3://...: left to tf.io.gfile.


def _check_directory(flag, path):
  """A directory we can create or write into, or SetupError."""
  if not path or not _local(path):
    return
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.exists(path):
    if not os.path.isdir(path):
      raise SetupError(f"--{flag}={path} is a file; pass a directory (a new or "
                       "existing folder).")
    if not os.access(path, os.W_OK | os.X_OK):
      raise SetupError(f"--{flag}={path} is not writable; pass a directory you "
                       "can write to.")
    return
  parent = os.path.dirname(path)
  while parent and not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise SetupError(f"--{flag}={path} cannot be created: {parent} is a file; "
                     "pass a directory path that is not under a file.")
  if not os.access(parent, os.W_OK | os.X_OK):
    raise SetupError(f"--{flag}={path} cannot be created: {parent} is not "
                     "writable; pass a directory you can write to.")


def validate(config, options):
  """Checks every setting that can be checked before training; returns the plan.

  Raises `SetupError` (a `ValueError`) with a one-line message that names
  the setting (as its examples/train.py flag) and the fix: values out of
  range, `end_step` before `begin_step`, a batch larger than the training
  set, unwritable or file-shadowed `model_dir` / `export_dir`,
  `export_tflite` without `export_dir`, a missing `data_dir`,
  `steps_per_execution` that does not divide the update frequency...
  Checks that need the strategy (batch split over replicas) are in `run`.

  Example:
  >>> from keras_rigl import recipes
  >>> config = recipes.get_config("fashion_mnist_lenet300_100")
  >>> recipes.validate(config, recipes.RunOptions()).train_steps
  4680
  >>> recipes.validate(config, recipes.RunOptions(export_tflite=True))
  Traceback (most recent call last):
  ...
  keras_rigl.recipes.errors.SetupError: --export_tflite needs --export_dir: pass --export_dir=DIR (the .tflite file goes there).
  """
  if not isinstance(config, configs.Config):
    raise TypeError(f"validate needs a recipes Config, got {type(config).__name__}; e.g. "
                    "recipes.get_config('fashion_mnist_lenet300_100').")
  if not isinstance(options, RunOptions):
    raise TypeError(f"validate needs RunOptions as its second argument, got "
                    f"{type(options).__name__}; e.g. recipes.RunOptions().")
  try:
    config.check()
  except ValueError as e:
    raise SetupError(str(e)) from None
  o = options
  if o.strategy not in strategy_lib.STRATEGIES:
    raise SetupError(f"--strategy={o.strategy!r} is unknown; use one of "
                     f"{strategy_lib.STRATEGIES}.")
  if o.tpu and o.strategy not in ("auto", "tpu"):
    raise SetupError(f"--tpu is only used with --strategy=tpu (or auto), not "
                     f"--strategy={o.strategy}; drop --tpu or use --strategy=tpu.")
  for name in ("steps_per_epoch", "eval_steps", "image_size", "cpu_devices"):
    value = getattr(o, name)
    if value is not None and (not isinstance(value, int) or value < 1):
      raise SetupError(f"--{name} must be a positive integer, got {value!r}.")
  if not isinstance(o.steps_per_execution, int) or o.steps_per_execution < 1:
    raise SetupError(f"--steps_per_execution must be a positive integer, got "
                     f"{o.steps_per_execution!r}.")
  if o.jit_compile not in (None, True, False):
    raise SetupError(f"--jit_compile must be true or false, got {o.jit_compile!r}.")
  if o.cpu_devices is not None and o.strategy not in ("auto", "mirrored"):
    raise SetupError(f"--cpu_devices={o.cpu_devices} splits the CPU for "
                     f"--strategy=mirrored, not --strategy={o.strategy}; drop "
                     "--cpu_devices or use --strategy=mirrored.")
  if o.image_size is not None and o.image_size < 8:
    raise SetupError(f"--image_size={o.image_size} is too small; use >= 8.")
  if not 0 < o.training_steps_multiplier < float("inf"):
    raise SetupError(f"--training_steps_multiplier must be a finite number > 0, got "
                     f"{o.training_steps_multiplier}; e.g. 2 for RigL 2x.")
  if not isinstance(o.seed, int) or o.seed < 0:
    raise SetupError(f"--seed must be an integer >= 0, got {o.seed!r}.")
  if o.verbose not in ("auto", 0, 1, 2):
    raise SetupError(f"--verbose must be auto, 0, 1 or 2, got {o.verbose!r}.")
  info = _data.dataset_info(config.dataset)
  if config.batch_size > info.num_train:
    raise SetupError(
        f"--batch_size={config.batch_size} is larger than the {config.dataset} "
        f"training set ({info.num_train} examples); use at most {info.num_train}.")
  plan = make_plan(config, info, o.steps_per_epoch, o.training_steps_multiplier)
  method = _registry.get(config.method)
  if method.window == "update" and plan.end_step < plan.begin_step:
    raise SetupError(
        f"--end_step={plan.end_step} is before --begin_step={plan.begin_step}: "
        f"{config.method} would make no mask update; set --end_step >= "
        "--begin_step (or a later --end_step / an earlier --begin_step).")
  if method.window == "pruning" and plan.pruning_end_step < plan.pruning_begin_step:
    raise SetupError(
        f"--pruning_end_step={plan.pruning_end_step} is before "
        f"--pruning_begin_step={plan.pruning_begin_step}; set --pruning_end_step "
        ">= --pruning_begin_step.")
  if (o.steps_per_execution > 1 and method.window is not None and
      not method.updates_in_train_step(config)):
    flag, freq = "update_freq", config.update_freq
    if method.window == "pruning":
      flag, freq = "pruning_freq", plan.pruning_freq
    if freq % o.steps_per_execution:
      raise SetupError(
          f"--steps_per_execution={o.steps_per_execution} must divide the update "
          f"frequency --{flag}={freq}; use a divisor of {freq}.")
  moves_counts = config.method == "snfs" and config.redistribution != "none" or (
      config.method == "rigl" and config.redistribution not in (None, "none"))
  if moves_counts and o.strategy == "tpu":
    raise SetupError(
        f"--redistribution moves layer counts, which needs dynamic shapes: --method="
        f"{config.method} with redistribution does not run under --strategy=tpu; use "
        "--redistribution=none there (or a GPU/CPU strategy).")
  if o.export_dir:
    backend.require_tensorflow(
        "--export_dir (SavedModel/TFLite export)",
        "Leave --export_dir out; the trained model can be saved with "
        "keras.saving.save_model or exported with model.export.")
  if o.export_tflite and not o.export_dir:
    raise SetupError("--export_tflite needs --export_dir: pass --export_dir=DIR "
                     "(the .tflite file goes there).")
  if o.data_dir and _local(o.data_dir) and not os.path.isdir(o.data_dir):
    raise SetupError(f"--data_dir={o.data_dir} is not a directory; pass the folder "
                     "that holds the data (or leave --data_dir out for the default).")
  if o.write_files:
    _check_directory("model_dir", o.model_dir)
  _check_directory("export_dir", o.export_dir)
  _check_export_target(o.export_dir, o.export_tflite)
  return plan


def _default_model_dir(options, config):
  # The process id keeps two runs started in the same second apart.
  stamp = time.strftime("%Y%m%d-%H%M%S")
  return os.path.join(tempfile.gettempdir(), "keras_rigl",
                      f"{stamp}-{os.getpid()}-{options.config_name}-{config.method}")


def _check_export_target(export_dir, tflite):
  """An earlier run's export is not overwritten: say so before training."""
  if not export_dir or not _local(export_dir):
    return
  targets = ["saved_model"] + (["model.tflite"] if tflite else [])
  for name in targets:
    path = os.path.join(export_dir, name)
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
      raise SetupError(f"--export_dir={export_dir} already holds {name}; pass a new "
                       "--export_dir or remove the old export.")


def run(config, options, callbacks=()):
  """Trains `config` as `options` says; prints and returns the report dict.

  Everything `validate` checks fails before the data or the model is built;
  `callbacks` are appended to the run's own. Example in the module docstring.
  """
  started = time.time()
  plan = validate(config, options)
  info = _data.dataset_info(config.dataset)
  input_shape = tuple(info.input_shape)
  if options.image_size:
    input_shape = (options.image_size, options.image_size, input_shape[-1])
  strategy_lib.split_cpu(options.cpu_devices)
  strategy = strategy_lib.make_strategy(options.strategy, options.tpu)
  replicas = strategy.num_replicas_in_sync
  for name in ("batch_size", "eval_batch_size"):
    value = getattr(config, name) or config.batch_size
    if value % replicas:
      raise SetupError(f"--{name}={value} does not split over {replicas} replicas; "
                       f"use a multiple of {replicas}.")
  model_dir = backup = None
  start_step = 0
  if options.write_files:
    model_dir = options.model_dir or _default_model_dir(options, config)
    # One backup directory for all workers (tf_keras' BackupAndRestore
    # expects that; non-chief workers write theirs to temporary places).
    backup = callbacks_lib.backup_dir(model_dir)
    if not strategy_lib.is_chief(strategy):
      # Each worker its own files; only the chief's are the run's.
      model_dir = os.path.join(model_dir, f"worker_{strategy.cluster_resolver.task_id}")
    # Resuming: the input starts where the backup's epochs end.
    start_step = min(callbacks_lib.resume_epoch(backup) * plan.steps_per_epoch,
                     plan.train_steps)
  logging.info("%s: %s", options.config_name, config)
  logging.info("plan: %s", plan)

  previous_policy = keras.mixed_precision.global_policy()
  try:
    if options.mixed_precision:
      keras.mixed_precision.set_global_policy(
          strategy_lib.mixed_precision_policy(strategy))
    datasets = make_datasets(config, strategy, data_dir=options.data_dir,
                             seed=options.seed, image_size=options.image_size,
                             start_step=start_step)
    small_dense_factor = None
    if _registry.get(config.method).model == "small_dense":
      small_dense_factor = small_dense_width(config, input_shape, info.num_classes,
                                             options.seed)
      logging.info("small_dense: width x%.4f", small_dense_factor)
    with strategy.scope():
      model, reference = build_training_model(
          config, input_shape, info.num_classes, options.seed, small_dense_factor,
          data=datasets.rigl)
      if config.lr_schedule == "cosine":
        schedule = WarmupCosineDecay(plan.peak_learning_rate, plan.train_steps,
                                     plan.warmup_steps)
      else:
        schedule = WarmupPiecewiseDecay(plan.peak_learning_rate, plan.warmup_steps,
                                        plan.lr_boundaries, plan.lr_multipliers)
      optimizer = keras.optimizers.SGD(schedule, momentum=config.momentum,
                                       nesterov=config.nesterov)
      metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
      if info.num_classes > 10:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5_accuracy"))
      compile_kwargs = {}
      # Mirrored replicas: XLA per replica (recipes/xla.py says why).
      per_replica_jit = options.jit_compile and xla.needs_per_replica_jit(strategy)
      if options.jit_compile is not None:
        compile_kwargs["jit_compile"] = bool(options.jit_compile and not per_replica_jit)
      model.compile(optimizer, SparseCrossEntropy(config.label_smoothing),
                    metrics=metrics, steps_per_execution=options.steps_per_execution,
                    **compile_kwargs)
      if per_replica_jit:
        xla.jit_compile_per_replica(model)
    scheduler = make_scheduler(config, plan, datasets.rigl, options.seed)
    # The masks before any update (also on resume: the backup is restored in fit).
    initial_flops_ratio = report_lib.flops_ratio(model)
    run_callbacks, monitor = callbacks_lib.make_callbacks(
        model_dir, plan, schedule, scheduler, config.eval_every == 1, start_step,
        backup=backup)
    model.fit(datasets.fit_input, epochs=plan.epochs, steps_per_epoch=plan.steps_per_epoch,
              validation_data=datasets.evaluation, validation_steps=options.eval_steps,
              validation_freq=config.eval_every, callbacks=run_callbacks + list(callbacks),
              verbose=options.verbose, shuffle=False)  # Our input is shuffled.
    test = model.evaluate(datasets.evaluation, steps=options.eval_steps,
                          return_dict=True, verbose=0)
    steps = int(model.optimizer.iterations.numpy())
    report = report_lib.build_report(
        model, reference, method=config.method, steps=steps,
        batch_size=config.batch_size, update_freq=config.update_freq,
        end_step=plan.end_step, pruning_begin_step=plan.pruning_begin_step,
        pruning_end_step=plan.pruning_end_step, pruning_freq=plan.pruning_freq,
        test_metrics=test, history=monitor.history, mask_updates=monitor.mask_updates,
        initial_flops_ratio=initial_flops_ratio,
        config=options.config_name, setup=dataclasses.asdict(config),
        options=dataclasses.asdict(options), plan=dataclasses.asdict(plan),
        run={"keras": FLAVOUR, "backend": backend.NAME,
             "strategy": type(strategy).__name__,
             "replicas": replicas, "seconds": time.time() - started,
             "small_dense_width": small_dense_factor, "resumed_at_step": start_step,
             "mixed_precision": keras.mixed_precision.global_policy().name})
    files = report.setdefault("files", {})
    if options.export_dir and strategy_lib.is_chief(strategy):
      files["saved_model"] = os.path.join(options.export_dir, "saved_model")
      if options.export_tflite:
        files["tflite"] = os.path.join(options.export_dir, "model.tflite")
    if model_dir:
      # The report first: it survives a failing export.
      files["figure"] = os.path.join(model_dir, "report.png")
      files["report"] = os.path.join(model_dir, "report.json")
      if callbacks_lib.has_tensorboard():
        files["tensorboard"] = os.path.join(model_dir, "logs")
      report_lib.save_figure(report, files["figure"])
      report_lib.save_json(report, files["report"])
    if "saved_model" in files:
      export_model(model, files["saved_model"])
      if "tflite" in files:
        export_model(model, files["tflite"], format="tflite")
    if not files:
      del report["files"]
    if options.print_report:
      print(report_lib.format_report(report), flush=True)
    return report
  finally:
    keras.mixed_precision.set_global_policy(previous_policy)
