"""examples/train.py killed with SIGKILL mid-epoch and resumed == one uninterrupted run.

Subprocess runs on Fashion-MNIST: 300 steps, 100 per epoch (the backup is
written at epoch ends), RigL updates every 20 steps. The interrupted run kills
itself at step 150 (KERAS_RIGL_TEST_KILL_AT_STEP, a test-only hook of
train.py), then runs again with the same flags: it restores the epoch-1
backup and its input starts at step 100. Final weights, masks and optimizer
slots (the backup written at the end of each run) must be bit-for-bit equal.
"""

import json
import os

import pytest
import signal
import subprocess
import sys

import numpy as np
import tensorflow as tf

import keras_rigl as kr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--train_steps=300", "--steps_per_epoch=100", "--update_freq=20",
         "--eval_steps=2", "--verbose=0"]


def _train(model_dir, kill_at=None, extra=()):
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # train.py's own quiet start.
  env.pop("KERAS_RIGL_TEST_KILL_AT_STEP", None)
  if kill_at is not None:
    env["KERAS_RIGL_TEST_KILL_AT_STEP"] = str(kill_at)
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, "examples", "train.py"), *FLAGS, *extra,
       f"--model_dir={model_dir}"], env=env, capture_output=True, text=True,
      timeout=600, check=False)


def _backup_arrays(model_dir):
  """Every variable of the run's last backup (Keras 3 .h5 or tf_keras checkpoint)."""
  backup = os.path.join(model_dir, "backup")
  h5 = os.path.join(backup, "latest.weights.h5")
  if os.path.exists(h5):
    import h5py  # pylint: disable=g-import-not-at-top
    arrays = {}
    with h5py.File(h5, "r") as f:
      f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()])
                   if isinstance(obj, h5py.Dataset) else None)
    return arrays
  checkpoint = tf.train.latest_checkpoint(os.path.join(backup, "chief"))
  reader = tf.train.load_checkpoint(checkpoint)
  return {name: reader.get_tensor(name)
          for name, _ in tf.train.list_variables(checkpoint)}


# RigL (the in-step update), and the schedulers with state beyond the model's
# variables: SNFS and momentum redistribution (momentum buffers, layer-count
# histories: recipes.callbacks.SchedulerBackup), min_fan_in. Each run is 25-30 s
# of subprocesses: RigL runs in both flavours (their checkpoint formats
# differ), each other scheduler in one (CI time; the state they add is saved
# by the same code in both flavours).
_RESUMED = {
    "keras3": [("rigl", ()), ("snfs", ("--method=snfs",))],
    "tf_keras": [("rigl", ()), ("redistribution", ("--redistribution=momentum",)),
                 ("min_fan_in", ("--min_fan_in=1",))],
}[kr.keras_flavour]


@pytest.mark.parametrize("extra", [extra for _, extra in _RESUMED],
                         ids=[name for name, _ in _RESUMED])
def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path, extra):
  whole, resumed = str(tmp_path / "whole"), str(tmp_path / "resumed")
  first = _train(whole, extra=extra)
  assert first.returncode == 0, first.stderr[-3000:]
  # Quiet start: our report, none of TensorFlow's C++ start-up lines.
  assert "oneDNN" not in first.stderr and "cuda" not in first.stderr.lower()
  assert "keras-rigl report" in first.stdout

  killed = _train(resumed, kill_at=150, extra=extra)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert not os.path.exists(os.path.join(resumed, "report.json"))
  again = _train(resumed, extra=extra)
  assert again.returncode == 0, again.stderr[-3000:]

  with open(os.path.join(whole, "report.json")) as f:
    report_whole = json.load(f)
  with open(os.path.join(resumed, "report.json")) as f:
    report_resumed = json.load(f)
  assert report_resumed["run"]["resumed_at_step"] == 100
  assert report_resumed["steps"] == report_whole["steps"] == 300
  assert report_resumed["mask_updates"] == report_whole["mask_updates"]
  assert report_resumed["test"] == report_whole["test"]
  assert report_resumed["flops"] == report_whole["flops"]

  a, b = _backup_arrays(whole), _backup_arrays(resumed)
  assert sorted(a) == sorted(b)
  # Masks (Keras 3: the wrapper's own vars) and optimizer slots are compared too.
  assert any("mask" in name or "sparse_wrapper/vars" in name for name in a), sorted(a)
  assert any("optimizer" in name for name in a), sorted(a)
  different = [name for name in a if not np.array_equal(a[name], b[name])]
  assert not different, different
