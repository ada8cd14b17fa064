"""MultiWorkerMirroredStrategy: two local worker processes end with equal masks.

The workers always run tf_keras: Keras 3's own `fit` fails under
MultiWorkerMirroredStrategy with "Attempt to convert a value (PerReplica...)"
even without keras_rigl (keras-team/keras#20585, open), so multi-worker
training needs TF_USE_LEGACY_KERAS=1 until Keras fixes it.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HELPER = os.path.join(os.path.dirname(__file__), "helpers", "multi_worker_rigl.py")


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


@pytest.mark.parametrize("mode", ["data", "step"])
def test_two_workers_hold_identical_masks_and_weights(tmp_path, mode):
  workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
  processes = []
  for index in range(2):
    env = dict(os.environ)
    env["TF_CONFIG"] = json.dumps({"cluster": {"worker": workers},
                                   "task": {"type": "worker", "index": index}})
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))] +
        env.get("PYTHONPATH", "").split(os.pathsep))
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["TF_USE_LEGACY_KERAS"] = "1"
    processes.append(subprocess.Popen(
        [sys.executable, HELPER, str(tmp_path / f"worker{index}.npz"), mode], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
  for process in processes:
    try:
      output, _ = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
      for p in processes:
        p.kill()
      raise
    assert process.returncode == 0, output.decode()[-3000:]
  first, second = (np.load(tmp_path / f"worker{i}.npz") for i in range(2))
  # Updates at steps 0, 2, ..., 12 (end_step).
  assert int(first["updates"]) == int(second["updates"]) == 7
  masks = [k for k in first.files if k.startswith("mask_")]
  assert masks
  for key in first.files:
    np.testing.assert_array_equal(first[key], second[key])
  for key in masks:
    initial = first[key.replace("mask_", "initial_")]
    assert first[key].sum() == initial.sum()
  assert any((first[k] != first[k.replace("mask_", "initial_")]).any() for k in masks)
