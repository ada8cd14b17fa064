"""Bad examples/train.py flags: each fails before the first step, with a clear message.

Every row parses the flags and calls `validate` in-process (no data is read,
no model is built); examples/train.py prints the same message as
``error: ...`` and exits with status 1.
"""

import os
import tempfile

from absl import flags

from examples import train
from keras_rigl.recipes import SetupError
from tests.bad_inputs import BadInput


def _validate(*args):
  """Parses train.py's flags from `args`, then checks the run they describe."""
  values = flags.FLAGS
  values.unparse_flags()
  try:
    values(["train.py", *args])
    config, options = train.setup_from_flags(values)
    train.check_method_flags(config, values)
    train.validate(config, options)
  finally:
    values.unparse_flags()


def _a_file():
  handle, path = tempfile.mkstemp(prefix="keras_rigl_bad_input_")
  os.close(handle)
  return path


def _an_old_export():
  directory = tempfile.mkdtemp(prefix="keras_rigl_bad_input_")
  os.makedirs(os.path.join(directory, "saved_model"))
  with open(os.path.join(directory, "saved_model", "saved_model.pb"), "wb") as f:
    f.write(b"x")
  return directory


def _row(name, args, says, what, error=SetupError):
  return BadInput(f"train_flags/{name}", lambda: _validate(*args()), error, says, what)


ROWS = [
    _row("export_dir_under_a_file", lambda: [f"--export_dir={_a_file()}/export"],
         ("--export_dir", "is a file", "directory"),
         "`--export_dir` inside a path where a file sits (fails at start, not after training)."),
    _row("export_dir_is_a_file", lambda: [f"--export_dir={_a_file()}"],
         ("--export_dir", "is a file", "pass a directory"),
         "`--export_dir` names an existing file."),
    _row("export_dir_holds_an_export", lambda: [f"--export_dir={_an_old_export()}"],
         ("--export_dir", "already holds", "new --export_dir"),
         "`--export_dir` already holds a SavedModel from an earlier run."),
    _row("export_tflite_without_export_dir", lambda: ["--export_tflite"],
         ("--export_tflite", "--export_dir=DIR"),
         "`--export_tflite` without `--export_dir` (it would be ignored)."),
    _row("model_dir_is_a_file", lambda: [f"--model_dir={_a_file()}"],
         ("--model_dir", "is a file", "pass a directory"),
         "`--model_dir` names an existing file."),
    _row("model_dir_under_a_file", lambda: [f"--model_dir={_a_file()}/run"],
         ("--model_dir", "is a file", "directory"),
         "`--model_dir` inside a path where a file sits."),
    _row("end_step_before_begin_step", lambda: ["--begin_step=200", "--end_step=100"],
         ("--end_step", "--begin_step", "no mask update", "set --end_step >="),
         "`--end_step` smaller than `--begin_step` (RigL/SET would never update)."),
    _row("begin_step_after_default_end", lambda: ["--method=set", "--begin_step=5000"],
         ("--end_step", "--begin_step", "later --end_step"),
         "`--begin_step` after the default end of updates (75% of the run)."),
    _row("pruning_end_before_begin",
         lambda: ["--method=pruning", "--pruning_begin_step=2000", "--pruning_end_step=1000"],
         ("--pruning_end_step", "--pruning_begin_step", ">="),
         "`--pruning_end_step` smaller than `--pruning_begin_step`."),
    _row("batch_size_above_training_set", lambda: ["--batch_size=70000"],
         ("--batch_size", "60000", "at most"),
         "`--batch_size` larger than the training set (no full batch exists)."),
    _row("negative_learning_rate", lambda: ["--learning_rate=-0.1"],
         ("learning_rate", "> 0", "e.g. 0.1"),
         "A negative `--learning_rate`."),
    _row("zero_learning_rate", lambda: ["--learning_rate=0"],
         ("learning_rate", "> 0"),
         "`--learning_rate=0` (nothing would train)."),
    _row("negative_weight_decay", lambda: ["--weight_decay=-1e-4"],
         ("weight_decay", ">= 0", "use 0"),
         "A negative `--weight_decay`."),
    _row("label_smoothing_one", lambda: ["--label_smoothing=1.0"],
         ("label_smoothing", "[0, 1)"),
         "`--label_smoothing` of 1 or more (targets would carry no label)."),
    _row("negative_erk_power_scale", lambda: ["--erk_power_scale=-1"],
         ("erk_power_scale", ">= 0"),
         "A negative `--erk_power_scale`."),
    _row("unknown_drop_fraction_schedule", lambda: ["--drop_fraction_schedule=linear"],
         ("drop_fraction_schedule", "use one of"),
         "`--drop_fraction_schedule` that is not constant, cosine or exponential(_k)."),
    _row("steps_per_execution_not_dividing_update_freq",
         lambda: ["--grow_scores=data", "--steps_per_execution=3", "--update_freq=100"],
         ("--steps_per_execution", "--update_freq", "divisor"),
         "`--steps_per_execution` that does not divide `--update_freq` with the "
         "host-scheduled update (`--grow_scores=data`; updates would be skipped)."),
    _row("grow_scores_step_with_redistribution",
         lambda: ["--grow_scores=step", "--redistribution=momentum"],
         ("--redistribution", "--grow_scores=data"),
         "`--redistribution` with the update inside the train step (`--grow_scores=step`)."),
    _row("grow_scores_for_set",
         lambda: ["--method=set", "--grow_scores=data"],
         ("--grow_scores", "--method=rigl"),
         "`--grow_scores` for a method that does not grow by gradient."),
    _row("steps_per_execution_not_dividing_pruning_freq",
         lambda: ["--method=pruning", "--steps_per_execution=3", "--pruning_freq=50"],
         ("--steps_per_execution", "--pruning_freq", "divisor"),
         "`--steps_per_execution` that does not divide `--pruning_freq`."),
    _row("missing_data_dir", lambda: ["--data_dir=/nonexistent/keras_rigl/data"],
         ("--data_dir", "not a directory", "leave --data_dir out"),
         "`--data_dir` that does not exist (a typo)."),
    _row("tpu_without_tpu_strategy", lambda: ["--tpu=my-tpu", "--strategy=mirrored"],
         ("--tpu", "--strategy=tpu"),
         "`--tpu` given with a non-TPU `--strategy` (it would be ignored)."),
    _row("negative_seed", lambda: ["--seed=-1"],
         ("--seed", ">= 0"),
         "A negative `--seed`."),
    _row("redistribution_unknown", lambda: ["--redistribution=magnitude"],
         ("--redistribution", "use one of"),
         "`--redistribution` that is not none, momentum or gradient."),
    _row("redistribution_with_set", lambda: ["--method=set", "--redistribution=gradient"],
         ("--redistribution", "--method=rigl", "--method=snfs"),
         "`--redistribution` with a method that does not redistribute (it would be ignored)."),
    _row("snfs_gradient_redistribution", lambda: ["--method=snfs", "--redistribution=gradient"],
         ("--method=snfs", "--redistribution=momentum"),
         "`--method=snfs --redistribution=gradient` (SNFS redistributes by momentum)."),
    _row("prune_rate_above_one", lambda: ["--method=snfs", "--prune_rate=1.5"],
         ("--prune_rate", "[0, 1]"),
         "`--prune_rate` above 1."),
    _row("snfs_momentum_one", lambda: ["--method=snfs", "--snfs_momentum=1"],
         ("--snfs_momentum", "[0, 1)"),
         "`--snfs_momentum=1` (the momentum would never take a gradient)."),
    _row("negative_min_fan_in", lambda: ["--min_fan_in=-1"],
         ("min_fan_in", ">= 0", "--min_fan_in=1"),
         "A negative `--min_fan_in`."),
    _row("min_fan_in_without_mask_updates", lambda: ["--method=static", "--min_fan_in=1"],
         ("--min_fan_in", "--method=rigl or set", "--method=static"),
         "`--min_fan_in` with a method that never updates masks (it would be ignored)."),
    _row("zero_snip_batches", lambda: ["--method=snip", "--snip_batches=0"],
         ("snip_batches", ">= 1", "--snip_batches=1"),
         "`--snip_batches=0` (no gradient to rank by)."),
    _row("unknown_snip_distribution", lambda: ["--method=snip", "--snip_distribution=random"],
         ("snip_distribution", "'random'", "'global'"),
         "`--snip_distribution` that is not global, uniform, er or erk."),
    _row("snip_flags_without_snip", lambda: ["--method=rigl", "--snip_batches=4"],
         ("--snip_batches", "--method=snip", "--method=rigl"),
         "`--snip_batches` with another method (it would be ignored)."),
    _row("unknown_lr_schedule", lambda: ["--lr_schedule=linear"],
         ("lr_schedule", "step", "cosine"),
         "`--lr_schedule` that is neither step nor cosine.",
         error=flags.IllegalFlagValueError),
    _row("sparsity_one", lambda: ["--sparsity=1.0"],
         ("--sparsity", "[0, 1)"),
         "`--sparsity=1` (no weight left).", error=flags.IllegalFlagValueError),
    _row("train_steps_and_epochs", lambda: ["--train_steps=10", "--epochs=2"],
         ("--train_steps", "--epochs", "not both"),
         "Both `--train_steps` and `--epochs`.", error=flags.IllegalFlagValueError),
    _row("cpu_devices_without_mirrored", lambda: ["--strategy=one_device", "--cpu_devices=2"],
         ("--cpu_devices", "--strategy=mirrored", "--strategy=one_device"),
         "`--cpu_devices` with a strategy that does not mirror over CPUs (it would be ignored)."),
    _row("zero_multiplier", lambda: ["--training_steps_multiplier=0"],
         ("--training_steps_multiplier", "> 0"),
         "`--training_steps_multiplier=0`.", error=flags.IllegalFlagValueError),
]
