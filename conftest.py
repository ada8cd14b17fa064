"""Doctest collection: modules written in Keras 3's keras.ops have no tf_keras examples."""

import os

import pytest

# Keras 3 only: tf_keras (TF_USE_LEGACY_KERAS=1) has no keras.ops.
_KERAS3_ONLY = ("keras_rigl/portable_masks.py", "keras_rigl/backend/jax_in_step.py")


def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
  if os.environ.get("TF_USE_LEGACY_KERAS") not in ("1", "true", "True"):
    return
  skip = pytest.mark.skip(reason="keras.ops examples: Keras 3 only (tf_keras has no keras.ops)")
  for item in items:
    path = str(getattr(item, "path", "")).replace(os.sep, "/")
    if path.endswith(_KERAS3_ONLY):
      item.add_marker(skip)
