"""Behaviour around the API's input checks that the bad-input table cannot express."""

import os
import sys
import warnings

import numpy as np
import pytest

import keras_rigl as kr
from keras_rigl._keras import keras
from tests.conftest import make_mlp


def test_sparsify_warns_when_nothing_ends_up_sparse(mlp):
  with pytest.warns(UserWarning, match="no layer of the model ends up sparse.*exclude"):
    dense = kr.sparsify(mlp, 0.9, exclude=lambda layer: True)
  assert not any(isinstance(l, kr.SparseWrapper) for l in dense.layers)


def test_sparsify_does_not_warn_for_sparsity_zero(mlp):
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    kr.sparsify(mlp, 0.0)


def test_sparsify_of_stripped_model_works(mlp):
  again = kr.sparsify(kr.strip(kr.sparsify(mlp, 0.5, "uniform")), 0.8, "uniform")
  assert [l.sparsity for l in again.layers] == pytest.approx([0.8] * 3, abs=0.02)


def test_wrapping_a_fresh_copy_of_a_wrapped_layer_is_fine():
  dense = keras.layers.Dense(4)
  kr.SparseWrapper(dense, 0.5)
  kr.SparseWrapper(dense.__class__.from_config(dense.get_config()), 0.5)


def test_export_overwrite(tmp_path):
  sparse = kr.sparsify(make_mlp(), 0.5, "uniform")
  path = str(tmp_path / "sm")
  kr.export(sparse, path)
  with pytest.raises(FileExistsError, match="overwrite=True"):
    kr.export(sparse, path)
  assert kr.export(sparse, path, overwrite=True) == path
  assert os.path.exists(os.path.join(path, "saved_model.pb"))


def test_export_into_empty_existing_directory(tmp_path):
  sparse = kr.sparsify(make_mlp(), 0.5, "uniform")
  kr.export(sparse, str(tmp_path))
  assert os.path.exists(tmp_path / "saved_model.pb")


def test_export_checks_path_before_work(tmp_path, monkeypatch):
  """A bad destination fails before the model is stripped (no wasted work)."""
  calls = []
  monkeypatch.setattr(sys.modules["keras_rigl.export"], "strip", calls.append)
  (tmp_path / "f").write_text("x")
  with pytest.raises(ValueError, match="is a file"):
    kr.export(np.zeros(1), str(tmp_path / "f" / "m"))
  assert not calls
