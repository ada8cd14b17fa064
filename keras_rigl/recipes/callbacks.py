"""The callbacks of a training run: stop at a step, monitor, back up, resume.

`make_callbacks` puts them in the order they must run; `resume_epoch` reads
how many epochs the backup of an interrupted run holds, before `fit`, so that
the input pipeline can start where the run stopped.

Example:
>>> import tempfile
>>> from keras_rigl.recipes import callbacks
>>> callbacks.resume_epoch(tempfile.mkdtemp())  # No backup yet.
0
"""

import importlib.util
import io
import json
import os

from absl import logging
import numpy as np
from keras_rigl.backend import tf

from keras_rigl import surgery as _surgery
from keras_rigl._keras import IS_KERAS3
from keras_rigl._keras import keras

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
    self._updates_seen = len(self.scheduler.update_history) if self.scheduler else 0

  def _record_updates(self):
    """Adds the scheduler's updates since the last call to the history."""
    if self.scheduler is None:
      return
    new = self.scheduler.update_history[self._updates_seen:]
    self._updates_seen += len(new)
    # Layer counts moved (redistribution): the report's training FLOPs follow
    # the inference FLOPs after each update.
    flops = dict(getattr(self.scheduler, "flops_history", None) or [])
    for step, change in new:
      update = {"step": int(step), "mask_change": float(change)}
      if hasattr(self.scheduler, "current_drop_fraction"):
        update["drop_fraction"] = float(self.scheduler.current_drop_fraction(step))
      if flops.get(step) is not None:
        update["flops_ratio"] = float(flops[step])
      self.mask_updates.append(update)
      if self._writer is not None:
        with self._writer.as_default(step=int(step)):
          tf.summary.scalar("mask/change", update["mask_change"])
          if "drop_fraction" in update:
            tf.summary.scalar("mask/drop_fraction", update["drop_fraction"])

  # A batch-begin hook, after the scheduler's (which makes host updates there):
  # batch-end hooks would stop Keras 3 dispatching them asynchronously.
  def on_train_batch_begin(self, batch, logs=None):
    if self.scheduler is not None and not getattr(self.scheduler, "in_step", False):
      self._record_updates()

  def on_epoch_end(self, epoch, logs=None):
    if self.scheduler is not None:
      sync = getattr(self.scheduler, "sync_updates", None)
      if sync is not None:
        sync()  # In-step updates: read them now.
      self._record_updates()
    step = self._step()
    table = _surgery.sparsity_report(self.model)
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


def backup_dir(model_dir):
  """Where `make_callbacks` puts the BackupAndRestore backup of a run.

  Example:
  >>> backup_dir("/tmp/run")
  '/tmp/run/backup'
  """
  return os.path.join(model_dir, "backup")


def make_callbacks(model_dir, plan, schedule, scheduler, validate_every_epoch,
                   start_step=0, backup=None):
  """Callbacks in the order they must run; the monitor is returned too.

  BackupAndRestore comes first so that the schedulers and the monitor see
  the restored step in on_train_begin. It backs up at every epoch end (the
  checkpoint cadence is `plan.steps_per_epoch`); `start_step` is where the
  input pipeline starts (`resume_epoch * steps_per_epoch`), checked against
  the restored step. `backup` is the backup directory (default
  `backup_dir(model_dir)`; the same for every worker of a multi-worker run).

  Example:
  >>> from keras_rigl.recipes import configs, plan as plan_lib, schedules
  >>> import keras_rigl as kr
  >>> run_plan = plan_lib.make_plan(configs.get_config("fashion_mnist_lenet300_100"),
  ...                               kr.data.dataset_info("fashion_mnist"))
  >>> lr = schedules.WarmupPiecewiseDecay(0.1)
  >>> found, monitor = make_callbacks(None, run_plan, lr, None, True)
  >>> [type(c).__name__ for c in found]
  ['TrainingMonitor']
  """
  tensorboard = bool(model_dir) and has_tensorboard()
  if model_dir and not tensorboard:
    logging.warning("No TensorBoard logs: `pip install tensorboard` to get them.")
  callbacks = []
  if model_dir:
    callbacks.append(keras.callbacks.BackupAndRestore(
        backup or backup_dir(model_dir), delete_checkpoint=False))
    callbacks.append(ResumeCheck(start_step))
  if scheduler is not None:
    callbacks.append(scheduler)
    if model_dir and hasattr(scheduler, "resume_state"):
      callbacks.append(SchedulerBackup(scheduler, backup or backup_dir(model_dir)))
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
      # A resumed run starts from the best value of the epochs it keeps: the
      # checkpoint is then the one an uninterrupted run would have kept.
      checkpoint = keras.callbacks.ModelCheckpoint(
          os.path.join(model_dir, "checkpoints", "best.weights.h5"),
          monitor="val_accuracy", mode="max", save_best_only=True,
          save_weights_only=True, initial_value_threshold=best_so_far(
              monitor.history_path, "val_accuracy", "max", start_step))
    else:
      checkpoint = keras.callbacks.ModelCheckpoint(
          os.path.join(model_dir, "checkpoints", "last.weights.h5"),
          save_weights_only=True)
    callbacks.append(checkpoint)
  if tensorboard:
    callbacks.append(keras.callbacks.TensorBoard(
        os.path.join(model_dir, "logs"), write_graph=False, profile_batch=0))
  return callbacks, monitor


def best_so_far(history_path, metric, mode, step):
  """The best `metric` of the epochs saved in `history_path` up to `step`, or None.

  `history_path` is the `TrainingMonitor`'s file; `mode` is "max" or "min".
  A resumed run gives it to `ModelCheckpoint(save_best_only=True)` as its
  `initial_value_threshold`, so that an epoch after the restart only
  replaces the best checkpoint if it beats every epoch before the interruption.

  Example:
  >>> import json, os, tempfile
  >>> path = os.path.join(tempfile.mkdtemp(), "history.json")
  >>> with open(path, "w") as f:
  ...   json.dump({"history": [{"step": 100, "val_accuracy": 0.8},
  ...                          {"step": 200, "val_accuracy": 0.7},
  ...                          {"step": 300, "val_accuracy": 0.9}]}, f)
  >>> best_so_far(path, "val_accuracy", "max", step=200)
  0.8
  >>> best_so_far(path, "val_accuracy", "max", step=0) is None
  True
  """
  if not history_path or not tf.io.gfile.exists(history_path):
    return None
  with tf.io.gfile.GFile(history_path) as f:
    saved = json.load(f)
  values = [float(h[metric]) for h in saved.get("history", [])
            if h.get("step", step + 1) <= step and metric in h and np.isfinite(h[metric])]
  if not values:
    return None
  return max(values) if mode == "max" else min(values)


def resume_epoch(backup_dir):
  """Epochs completed in the `keras.callbacks.BackupAndRestore` backup (0: none).

  Read from the backup's own files before `fit`, in both flavours: Keras 3's
  ``training_metadata.json`` and tf_keras' ``chief/`` checkpoint. `fit`
  restarts at this epoch (backups are written at epoch ends), so the input
  pipeline must start at ``resume_epoch * steps_per_epoch``. Example in the
  module docstring.
  """
  if not backup_dir or not tf.io.gfile.exists(backup_dir):
    return 0
  if IS_KERAS3:
    path = os.path.join(backup_dir, "training_metadata.json")
    if not tf.io.gfile.exists(path):
      return 0
    with tf.io.gfile.GFile(path) as f:
      return max(0, int(json.load(f).get("epoch", 0)))
  checkpoint = tf.train.latest_checkpoint(os.path.join(backup_dir, "chief"))
  if checkpoint is None:
    return 0
  saved = tf.train.load_checkpoint(checkpoint).get_tensor(
      "ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE")
  return max(0, int(saved) + 1)  # The index of the last completed epoch.


class SchedulerBackup(keras.callbacks.Callback):
  """Saves a mask scheduler's own state beside the backup; restores it on resume.

  BackupAndRestore saves the model's variables at every epoch end; what the
  scheduler holds besides them (SNFS's and momentum redistribution's
  momentum buffers, layer-count and FLOPs histories, the end step resolved at
  the first fit) goes to ``scheduler_state.npz`` in the backup directory at
  the same time, with the step it belongs to. A resumed run puts it back in
  on_train_begin (after the scheduler's own, which makes the buffers) when
  the restored step is that step, so that it continues exactly as an
  uninterrupted run; otherwise it warns and starts the state afresh.
  """

  FILE = "scheduler_state.npz"

  def __init__(self, scheduler, directory):
    super().__init__()
    self.scheduler = scheduler
    self.path = os.path.join(directory, self.FILE)

  def _step(self):
    return int(self.model.optimizer.iterations.numpy())

  def on_train_begin(self, logs=None):
    step = self._step()
    if step == 0 or not tf.io.gfile.exists(self.path):
      return
    with tf.io.gfile.GFile(self.path, "rb") as f:
      saved = dict(np.load(io.BytesIO(f.read()), allow_pickle=False))
    saved_step = int(saved.pop("__step__"))
    meta = json.loads(str(saved.pop("__meta__")))
    if saved_step != step:
      logging.warning("The scheduler state in %s is from step %d, the backup from step "
                      "%d: the resumed run starts the scheduler's own state afresh.",
                      self.path, saved_step, step)
      return
    self.scheduler.restore_resume_state(meta, saved)

  def on_epoch_end(self, epoch, logs=None):
    meta, arrays = self.scheduler.resume_state()
    buffer = io.BytesIO()
    meta = json.dumps(meta, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    np.savez(buffer, __step__=np.int64(self._step()), __meta__=meta, **arrays)
    tf.io.gfile.makedirs(os.path.dirname(self.path))
    partial = self.path + ".partial"
    with tf.io.gfile.GFile(partial, "wb") as f:
      f.write(buffer.getvalue())
    tf.io.gfile.rename(partial, self.path, overwrite=True)


class ResumeCheck(keras.callbacks.Callback):
  """Warns when `fit` restored another step than the input pipeline starts at.

  Runs right after BackupAndRestore: the optimizer's step is then the
  restored one. A mismatch means the backup changed between `resume_epoch`
  and `fit` (or its format is not the one we read).
  """

  def __init__(self, start_step):
    super().__init__()
    self.start_step = int(start_step)

  def on_train_begin(self, logs=None):
    step = int(self.model.optimizer.iterations.numpy())
    if step != self.start_step:
      logging.warning(
          "The backup restored step %d but the input starts at step %d: this "
          "run does not read the same batches as an uninterrupted one.",
          step, self.start_step)
