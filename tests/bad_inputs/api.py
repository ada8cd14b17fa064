"""Bad inputs to the model-level API: SparseWrapper, sparsify, layer_sparsities, strip, export."""

import os
import tempfile

import numpy as np

import keras_rigl as kr
from keras_rigl._keras import keras
from tests.bad_inputs import BadInput


def _mlp():
  return keras.Sequential([keras.Input((12,)), keras.layers.Dense(8, name="fc1"),
                           keras.layers.Dense(3, name="fc2")])


def _sparse():
  return kr.sparsify(_mlp(), 0.5, "uniform")


def _wrap_twice():
  dense = keras.layers.Dense(4)
  kr.SparseWrapper(dense, 0.5)
  kr.SparseWrapper(dense, 0.5)


class _Subclassed(keras.Model):

  def __init__(self):
    super().__init__()
    self.fc = keras.layers.Dense(3)

  def call(self, x):
    return self.fc(x)


def _file_path():
  handle, path = tempfile.mkstemp()
  os.close(handle)
  return path


def _non_empty_dir():
  path = tempfile.mkdtemp()
  with open(os.path.join(path, "notes.txt"), "w") as f:
    f.write("keep me")
  return path


ROWS = [
    BadInput("wrapper/sparsity_one", lambda: kr.SparseWrapper(keras.layers.Dense(4), 1.0),
             ValueError, ("sparsity", "[0, 1)"), "SparseWrapper sparsity of 1.0 or more."),
    BadInput("wrapper/sparsity_negative", lambda: kr.SparseWrapper(keras.layers.Dense(4), -0.1),
             ValueError, ("sparsity", "[0, 1)"), "SparseWrapper negative sparsity."),
    BadInput("wrapper/sparsity_string", lambda: kr.SparseWrapper(keras.layers.Dense(4), "high"),
             ValueError, ("sparsity", "number"), "SparseWrapper sparsity that is not a number."),
    BadInput("wrapper/sparsity_dict_bad_value",
             lambda: kr.SparseWrapper(keras.layers.Dense(4), {"kernel": 2.0}),
             ValueError, ("sparsity['kernel']", "[0, 1)"), "A per-weight sparsity dict with a bad value."),
    BadInput("wrapper/sparsity_dict_unknown_weight",
             lambda: kr.SparseWrapper(keras.layers.Dense(4), {"bias": 0.5})(np.ones((1, 3))),
             ValueError, ("sparsity names", "kernel"), "A per-weight sparsity dict naming a weight the layer lacks."),
    BadInput("wrapper/unsupported_layer",
             lambda: kr.SparseWrapper(keras.layers.BatchNormalization(), 0.5),
             ValueError, ("cannot wrap", "get_sparsifiable_weights"),
             "Wrapping a layer type without sparsifiable weights (BatchNormalization)."),
    BadInput("wrapper/mask_init", lambda: kr.SparseWrapper(keras.layers.Dense(4), 0.5, mask_init="zeros"),
             ValueError, ("mask_init", "'random'"), "An unknown mask_init."),
    BadInput("wrapper/seed_string", lambda: kr.SparseWrapper(keras.layers.Dense(4), 0.5, seed="abc"),
             TypeError, ("seed", "integer"), "A seed that is not an integer."),
    BadInput("wrapper/wrap_a_wrapper",
             lambda: kr.SparseWrapper(kr.SparseWrapper(keras.layers.Dense(4), 0.5), 0.5),
             ValueError, ("already a SparseWrapper", "inner layer"), "Wrapping a SparseWrapper again."),
    BadInput("wrapper/same_layer_twice", _wrap_twice, ValueError,
             ("already wrapped", "wrap each layer once"),
             "Wrapping one layer object in two SparseWrappers."),
    BadInput("sparsify/not_a_model", lambda: kr.sparsify(keras.layers.Dense(3), 0.9),
             TypeError, ("sparsify", "keras Model"), "sparsify given a layer instead of a model."),
    BadInput("sparsify/subclassed", lambda: kr.sparsify(_Subclassed(), 0.9), TypeError,
             ("subclassed", "SparseWrapper"), "sparsify given a subclassed model."),
    BadInput("sparsify/unbuilt", lambda: kr.sparsify(keras.Sequential([keras.layers.Dense(3)]), 0.9),
             ValueError, ("built", "Input"), "sparsify given a model without input shape."),
    BadInput("sparsify/already_sparse", lambda: kr.sparsify(_sparse(), 0.9), ValueError,
             ("already sparse", "strip"), "sparsify of a model that sparsify already returned."),
    BadInput("sparsify/sparsity_one", lambda: kr.sparsify(_mlp(), 1.0), ValueError,
             ("sparsity", "[0, 1)"), "sparsify with sparsity 1.0."),
    BadInput("sparsify/distribution", lambda: kr.sparsify(_mlp(), 0.9, "random"), ValueError,
             ("distribution", "'erk'"), "An unknown distribution name."),
    BadInput("sparsify/erk_power_scale", lambda: kr.sparsify(_mlp(), 0.9, erk_power_scale=-1),
             ValueError, ("erk_power_scale", ">= 0"), "A negative erk_power_scale."),
    BadInput("sparsify/custom_unknown_layer",
             lambda: kr.sparsify(_mlp(), 0.9, custom_sparsity={"fc9": 0.0}), ValueError,
             ("custom_sparsity", "fc9"), "custom_sparsity naming a layer the model lacks."),
    BadInput("sparsify/custom_bad_value",
             lambda: kr.sparsify(_mlp(), 0.9, custom_sparsity={"fc1": 1.5}), ValueError,
             ("custom_sparsity['fc1']", "[0, 1)"), "custom_sparsity with a value outside [0, 1)."),
    BadInput("sparsify/exclude_unknown", lambda: kr.sparsify(_mlp(), 0.9, exclude=["nope"]),
             ValueError, ("exclude", "nope"), "exclude naming a layer the model lacks."),
    BadInput("sparsify/seed_string", lambda: kr.sparsify(_mlp(), 0.9, seed="abc"), TypeError,
             ("seed", "integer"), "sparsify with a seed that is not an integer."),
    BadInput("layer_sparsities/list_of_shapes",
             lambda: kr.layer_sparsities([(784, 300), (300, 10)], 0.9), TypeError,
             ("shapes", "dict"), "layer_sparsities given a list of shapes instead of a dict."),
    BadInput("layer_sparsities/empty_shape", lambda: kr.layer_sparsities({"fc": (0, 3)}, 0.9),
             ValueError, ("'fc'", "empty shape"), "layer_sparsities with an empty weight shape."),
    BadInput("strip/not_a_model", lambda: kr.strip("model.keras"), TypeError,
             ("strip", "keras Model"), "strip given a path instead of a model."),
    BadInput("export/format", lambda: kr.export(_sparse(), tempfile.mkdtemp() + "/m", format="onnx"),
             ValueError, ("format", "'tflite'"), "An unknown export format."),
    BadInput("export/under_a_file", lambda: kr.export(_sparse(), os.path.join(_file_path(), "m")),
             ValueError, ("export path", "is a file"), "An export path inside an existing file."),
    BadInput("export/non_empty_directory", lambda: kr.export(_sparse(), _non_empty_dir()),
             FileExistsError, ("already exists", "overwrite=True"),
             "Exporting a SavedModel into a non-empty directory."),
    BadInput("export/tflite_into_directory",
             lambda: kr.export(_sparse(), tempfile.mkdtemp(), format="tflite"), ValueError,
             ("is a directory", "model.tflite"), "A TFLite export path that is a directory."),
    BadInput("export/path_type", lambda: kr.export(_sparse(), 42), TypeError,
             ("export path", "str"), "An export path that is not a string."),
]
