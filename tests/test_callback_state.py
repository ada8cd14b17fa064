"""Keras callback state that must survive a resumed run (recipes.make_callbacks)."""

import json
import os

import numpy as np
import tensorflow as tf

import keras_rigl as kr
from keras_rigl._keras import keras
from keras_rigl.recipes import callbacks as callbacks_lib
from keras_rigl.recipes import configs, plan as plan_lib, schedules


def _checkpoint(model_dir, start_step):
  plan = plan_lib.make_plan(configs.get_config("fashion_mnist_lenet300_100"),
                            kr.data.dataset_info("fashion_mnist"))
  found, _ = callbacks_lib.make_callbacks(model_dir, plan, schedules.WarmupPiecewiseDecay(0.1),
                                          None, True, start_step)
  checkpoint, = [c for c in found if isinstance(c, keras.callbacks.ModelCheckpoint)]
  return checkpoint


def test_model_checkpoint_keeps_its_best_value_across_resume(tmp_path):
  model_dir = str(tmp_path)
  with open(os.path.join(model_dir, "history.json"), "w") as f:
    json.dump({"history": [{"epoch": 1, "step": 100, "val_accuracy": 0.85},
                           {"epoch": 2, "step": 200, "val_accuracy": 0.80},
                           # Written after the backup the run resumes from:
                           {"epoch": 3, "step": 300, "val_accuracy": 0.95}]}, f)
  assert _checkpoint(model_dir, start_step=0).best in (None, -np.inf)  # A fresh run.
  checkpoint = _checkpoint(model_dir, start_step=200)
  assert checkpoint.best == 0.85
  # An epoch after the restart that does not beat 0.85 writes no checkpoint.
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  checkpoint.set_model(model)
  checkpoint.on_train_begin()
  for epoch, value in ((2, 0.84), (3, 0.86)):
    checkpoint.on_epoch_begin(epoch)
    checkpoint.on_epoch_end(epoch, {"val_accuracy": value})
    written = os.path.exists(os.path.join(model_dir, "checkpoints", "best.weights.h5"))
    assert written == (value > 0.85)
  assert checkpoint.best == 0.86


class _MovingScheduler:
  """What TrainingMonitor reads of a scheduler whose layer counts move."""
  updates = 0
  last_update_step = None
  last_mask_change = 0.1

  def __init__(self):
    self.flops_history = []
    self.update_history = []

  def current_drop_fraction(self, step):
    return 0.3


def test_report_training_flops_follow_the_flops_history(tmp_path):
  from keras_rigl.recipes import report as report_lib  # pylint: disable=g-import-not-at-top
  scheduler = _MovingScheduler()
  monitor = callbacks_lib.TrainingMonitor(schedules.WarmupPiecewiseDecay(0.1), scheduler)
  dense = kr.models.lenet300_100()
  model = kr.sparsify(dense, 0.9)
  model.compile(keras.optimizers.SGD(0.1), "mse")
  monitor.set_model(model)
  monitor.on_train_begin()
  for step, ratio in ((0, 0.1), (100, 0.2), (200, 0.3)):
    scheduler.updates += 1
    scheduler.last_update_step = step
    scheduler.flops_history.append((step, ratio))
    scheduler.update_history.append((step, scheduler.last_mask_change))
    monitor.on_train_batch_begin(0)
  assert [u["flops_ratio"] for u in monitor.mask_updates] == [0.1, 0.2, 0.3]
  common = dict(method="snfs", steps=300, batch_size=10, update_freq=100, end_step=300)
  moved = report_lib.build_report(model, dense, mask_updates=monitor.mask_updates,
                                  initial_flops_ratio=0.1, **common)
  final = report_lib.build_report(model, dense, **common)
  assert moved["flops"]["training_from"] == "flops_history"
  assert final["flops"]["training_from"] == "final model"
  # SNFS charges 2 f_sparse + f_dense per step: steps 0-99 at 0.1, 100-199 at
  # 0.2, 200-299 at 0.3 of the dense FLOPs.
  f_dense = kr.count_flops(dense).dense
  want = sum(100 * 10 * (2 * r * f_dense + f_dense) for r in (0.1, 0.2, 0.3))
  assert np.isclose(moved["flops"]["training"], want, rtol=1e-9)
  assert not np.isclose(final["flops"]["training"], want, rtol=1e-3)


def test_end_step_none_is_resolved_once_and_survives_resume():
  x = np.random.default_rng(0).normal(size=(64, 12)).astype("float32")
  y = (x[:, 0] > 0).astype("int32")
  data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)

  def fit(scheduler, epochs, **kwargs):
    keras.utils.set_random_seed(0)
    model = kr.sparsify(keras.Sequential([keras.Input((12,)), keras.layers.Dense(8),
                                          keras.layers.Dense(2)]), 0.8)
    model.compile(keras.optimizers.SGD(0.1),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data, epochs=epochs, verbose=0, callbacks=[scheduler], **kwargs)
    return model

  scheduler = kr.SETScheduler(update_freq=2)
  model = fit(scheduler, epochs=4)  # 4 epochs of 4 steps: end at 75% = step 12.
  assert scheduler._end_step == 12  # pylint: disable=protected-access
  # Later fits (per-epoch loops) keep the end of the first fit's schedule.
  model.fit(data, epochs=1, verbose=0, callbacks=[scheduler])
  assert scheduler._end_step == 12  # pylint: disable=protected-access
  meta, arrays = scheduler.resume_state()
  assert meta["resolved_end_step"] == 12 and meta["updates"] == scheduler.updates
  # A resumed run (new process, new scheduler) whose first fit is shorter
  # takes the saved end step back.
  again = kr.SETScheduler(update_freq=2)
  fit(again, epochs=1)
  assert again._end_step == 3  # pylint: disable=protected-access
  again.restore_resume_state(meta, arrays)
  assert again._end_step == 12 and again.updates == scheduler.updates  # pylint: disable=protected-access
  del model


def test_gradient_tap_state_round_trips_under_mirrored_strategy(mirrored_strategy):
  # SNFS / momentum redistribution resume: the saved momentum is the sum over
  # replicas; restoring gives each replica its share, so the sum (what the
  # update reads) is the saved one, on every replica count.
  from keras_rigl.methods.gradient_tap import GradientTap
  saved = np.arange(6, dtype=np.float32).reshape(2, 3)
  with mirrored_strategy.scope():
    tap = GradientTap((2, 3), momentum=0.9, step=tf.Variable(0, dtype=tf.int64))
    tap.restore(saved, np.int64(41))
  buffer, last_step = tap.state()
  np.testing.assert_array_equal(buffer, saved)
  assert int(last_step) == 41
  shares = [np.asarray(v) for v in tap.buffer.values]
  assert len(shares) == 2
  for share in shares:
    np.testing.assert_array_equal(share, saved / 2)
