"""Keras 3 on JAX / PyTorch: keras_rigl runs where TensorFlow cannot be imported.

tests/backends/helpers/no_tensorflow.py runs in a fresh process with an import
hook that refuses TensorFlow (as on a machine without it): masked storage,
every scheduler, snip, strip, reports, FLOPs, saving; TensorFlow-only features
raise TensorFlowOnlyError; TensorFlow is never imported.
"""

import os
import subprocess
import sys

import pytest

from keras_rigl import backend

HELPER = os.path.join(os.path.dirname(__file__), "helpers", "no_tensorflow.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.skipif(backend.IS_TENSORFLOW, reason="TensorFlow is the backend here; "
                    "make test-jax / make test-torch run this")
def test_runs_without_tensorflow():
  env = dict(os.environ, KERAS_BACKEND=backend.NAME,
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.pop("TF_USE_LEGACY_KERAS", None)
  result = subprocess.run([sys.executable, HELPER], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
  assert result.returncode == 0 and result.stdout.strip().endswith("ok"), (
      result.stdout[-2000:] + result.stderr[-4000:])
