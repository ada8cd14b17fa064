"""Export a sparse model as a SavedModel or a TFLite flatbuffer.

Both start from `strip(model)`, so the exported kernels are ``W * M`` with the
inactive weights exactly zero and no masks left in the graph. Compressed
layers (`keras_rigl.layers`) stay compressed in a SavedModel (values +
positions, a sparse matmul in the graph); TFLite has no such op, so there they
become dense kernels (which must fit `strip`'s size limit).
"""

import os
import tempfile

import tensorflow as tf

from keras_rigl import _keras
from keras_rigl.surgery import strip

EXPORT_FORMATS = ("saved_model", "tflite")


def _save_saved_model(plain, path):
  if _keras.IS_KERAS3:
    plain.export(path, format="tf_saved_model", verbose=False)
  else:
    tf.saved_model.save(plain, path)


def export(model, path, format="saved_model"):  # pylint: disable=redefined-builtin
  """Writes `model` without its masks, for serving.

  Args:
    model: a Sequential/Functional model, with or without SparseWrappers.
    path: a directory for "saved_model", a file (e.g. "model.tflite") for
      "tflite".
    format: "saved_model" (loadable with `tf.saved_model.load`, signature
      "serving_default") or "tflite" (converted with TFLite's sparsity
      optimisation, `tf.lite.Optimize.EXPERIMENTAL_SPARSITY`).

  Returns:
    `path`.

  Example:
  >>> export(sparse_model, "/tmp/lenet_sm")
  >>> served = tf.saved_model.load("/tmp/lenet_sm")
  >>> export(sparse_model, "/tmp/lenet.tflite", format="tflite")
  """
  if format not in EXPORT_FORMATS:
    raise ValueError(f"Unknown export format {format!r}; use one of {EXPORT_FORMATS}.")
  plain = strip(model, keep_compressed=format == "saved_model")
  path = os.fspath(path)
  if format == "saved_model":
    _save_saved_model(plain, path)
    return path
  with tempfile.TemporaryDirectory() as tmp:
    _save_saved_model(plain, tmp)
    converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    flatbuffer = converter.convert()
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  with open(path, "wb") as f:
    f.write(flatbuffer)
  return path
