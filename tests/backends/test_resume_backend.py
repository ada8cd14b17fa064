"""examples/train.py killed with SIGKILL and resumed == one uninterrupted run, on JAX.

The TensorFlow flavours have this in tests/test_resume.py (RigL, SNFS,
redistribution, min_fan_in); here the same check runs on the backend in use
when it is not TensorFlow: RigL with the update inside the (jitted) train
step, 120 steps of 40 an epoch, updates every 20 steps, the run killed at
step 60 and resumed from the backup of step 40. Weights, masks and optimizer
slots of the final backups must be bit-for-bit equal, and so must the report.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from keras_rigl import backend

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAGS = ["--train_steps=120", "--steps_per_epoch=40", "--update_freq=20",
         "--eval_steps=2", "--verbose=0"]

pytestmark = pytest.mark.skipif(
    backend.IS_TENSORFLOW, reason="tests/test_resume.py runs this on TensorFlow")


def _train(model_dir, kill_at=None):
  env = dict(os.environ, PYTHONPATH=ROOT, KERAS_BACKEND=backend.NAME)
  env.pop("KERAS_RIGL_TEST_KILL_AT_STEP", None)
  if kill_at is not None:
    env["KERAS_RIGL_TEST_KILL_AT_STEP"] = str(kill_at)
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, "examples", "train.py"), *FLAGS,
       f"--model_dir={model_dir}"], env=env, capture_output=True, text=True,
      timeout=600, check=False)


def _backup_arrays(model_dir):
  import h5py  # pylint: disable=g-import-not-at-top
  arrays = {}
  with h5py.File(os.path.join(model_dir, "backup", "latest.weights.h5"), "r") as f:
    f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()])
                 if isinstance(obj, h5py.Dataset) else None)
  return arrays


def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path):
  whole, resumed = str(tmp_path / "whole"), str(tmp_path / "resumed")
  first = _train(whole)
  assert first.returncode == 0, first.stderr[-3000:]
  killed = _train(resumed, kill_at=60)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  again = _train(resumed)
  assert again.returncode == 0, again.stderr[-3000:]

  reports = []
  for model_dir in (whole, resumed):
    with open(os.path.join(model_dir, "report.json")) as f:
      reports.append(json.load(f))
  assert reports[1]["run"]["resumed_at_step"] == 40
  assert reports[0]["steps"] == reports[1]["steps"] == 120
  assert [u["step"] for u in reports[0]["mask_updates"]] == [0, 20, 40, 60, 80]
  assert reports[1]["mask_updates"] == reports[0]["mask_updates"]
  assert reports[1]["test"] == reports[0]["test"]

  a, b = _backup_arrays(whole), _backup_arrays(resumed)
  assert sorted(a) == sorted(b)
  assert any(name.startswith("optimizer/") for name in a), sorted(a)
  different = [name for name in a if not np.array_equal(a[name], b[name])]
  assert not different, different
