"""Models saved with the recipes' objects under their earlier registered names still load."""

import json
import warnings
import zipfile

import numpy as np
import pytest

import keras_rigl as kr
from keras_rigl._keras import keras
from keras_rigl.recipes import SparseCrossEntropy, WarmupPiecewiseDecay


def _saved_model(path):
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
  model.compile(keras.optimizers.SGD(WarmupPiecewiseDecay(0.1, 5, [10], [0.1])),
                SparseCrossEntropy(label_smoothing=0.1))
  model.fit(np.ones((8, 4), "float32"), np.zeros(8, "int32"), verbose=0)
  model.save(path)
  return model


def _rename(path, old, new):
  """Rewrites the names in a .keras file's config, as an older version wrote them."""
  with zipfile.ZipFile(path) as archive:
    files = {name: archive.read(name) for name in archive.namelist()}
  text = files["config.json"].decode()
  assert old in text
  files["config.json"] = text.replace(old, new).encode()
  with zipfile.ZipFile(path, "w") as archive:
    for name, data in files.items():
      archive.writestr(name, data)


def test_new_saves_use_the_new_names(tmp_path):
  path = str(tmp_path / "new.keras")
  _saved_model(path)
  with zipfile.ZipFile(path) as archive:
    text = archive.read("config.json").decode()
  assert "keras_rigl>WarmupPiecewiseDecay" in text
  assert "keras_rigl_examples" not in text


def test_old_names_load_with_a_deprecation_warning(tmp_path):
  path = str(tmp_path / "old.keras")
  model = _saved_model(path)
  _rename(path, "keras_rigl>", "keras_rigl_examples>")
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    loaded = keras.models.load_model(path)
  messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
  assert any("keras_rigl_examples>" in m and "Save the model again" in m for m in messages)
  schedule = loaded.optimizer.learning_rate if hasattr(loaded.optimizer, "learning_rate") \
      else None
  schedule = getattr(loaded.optimizer, "_learning_rate", schedule)
  assert isinstance(schedule, WarmupPiecewiseDecay)
  assert schedule.get_config() == model.optimizer._learning_rate.get_config()  # pylint: disable=protected-access
  x = np.ones((2, 4), "float32")
  np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
  assert isinstance(loaded.loss, SparseCrossEntropy) and loaded.loss.label_smoothing == 0.1
  assert kr.recipes.legacy_names.OLD_PACKAGE == "keras_rigl_examples"


def test_unknown_old_name_still_fails(tmp_path):
  path = str(tmp_path / "other.keras")
  _saved_model(path)
  _rename(path, "keras_rigl>WarmupPiecewiseDecay", "keras_rigl_examples>NoSuchSchedule")
  with pytest.raises(Exception):
    keras.models.load_model(path)
