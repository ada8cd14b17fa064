"""Export a sparse model as a SavedModel or a TFLite flatbuffer.

Both start from `strip(model)`, so the exported kernels are ``W * M`` with the
inactive weights exactly zero and no masks left in the graph. Compressed
layers (`keras_rigl.layers`) stay compressed in a SavedModel (values +
positions, a sparse matmul in the graph); TFLite has no such op, so there they
become dense kernels (which must fit `strip`'s size limit).
"""

import os
import tempfile

from keras_rigl.backend import tf

from keras_rigl import _keras
from keras_rigl import backend
from keras_rigl.surgery import strip

EXPORT_FORMATS = ("saved_model", "tflite")


def _save_saved_model(plain, path):
  if _keras.IS_KERAS3:
    plain.export(path, format="tf_saved_model", verbose=False)
  else:
    tf.saved_model.save(plain, path)


def _check_destination(path, format, overwrite):  # pylint: disable=redefined-builtin
  """Fails before any work when `path` cannot receive the export."""
  parent = os.path.dirname(os.path.abspath(path))
  while parent and not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if parent and not os.path.isdir(parent):
    raise ValueError(
        f"export path {path!r} lies under {parent!r}, which is a file, not a "
        "directory. Choose a path in a directory (or remove the file).")
  if parent and not os.access(parent, os.W_OK | os.X_OK):
    raise PermissionError(
        f"export path {path!r}: no permission to write in {parent!r}. Choose a "
        "writable directory.")
  wants_dir = format == "saved_model"
  if os.path.exists(path):
    if wants_dir and not os.path.isdir(path):
      raise ValueError(f"export path {path!r} is a file; format='saved_model' writes a "
                       "directory. Choose a new path.")
    if not wants_dir and os.path.isdir(path):
      raise ValueError(f"export path {path!r} is a directory; format='tflite' writes a "
                       "file. Give a file name such as 'model.tflite'.")
    if not overwrite and (not wants_dir or os.listdir(path)):
      raise FileExistsError(
          f"export path {path!r} already exists and is not empty. Choose a new path "
          "or pass overwrite=True to write over it.")


def export(model, path, format="saved_model", overwrite=False):  # pylint: disable=redefined-builtin
  """Writes `model` without its masks, for serving.

  Args:
    model: a Sequential/Functional model, with or without SparseWrappers.
    path: a directory for "saved_model", a file (e.g. "model.tflite") for
      "tflite".
    format: "saved_model" (loadable with `tf.saved_model.load`, signature
      "serving_default") or "tflite" (converted with TFLite's sparsity
      optimisation, `tf.lite.Optimize.EXPERIMENTAL_SPARSITY`).
    overwrite: write over an existing file or non-empty directory (by default
      that is an error, raised before any work, as are paths that cannot be
      written).

  Returns:
    `path`.

  Example:
  >>> import keras_rigl as kr
  >>> model = kr.keras.Sequential([kr.keras.Input((8,)), kr.keras.layers.Dense(4)])
  >>> sparse_model = kr.sparsify(model, 0.5, distribution="uniform")
  >>> folder = tempfile.mkdtemp()
  >>> path = export(sparse_model, os.path.join(folder, "saved_model"))
  >>> served = tf.saved_model.load(path)
  >>> path = export(sparse_model, os.path.join(folder, "model.tflite"), format="tflite")
  >>> os.path.getsize(path) > 0
  True
  """
  backend.require_tensorflow(
      f"keras_rigl.export (format={format!r}: SavedModel/TFLite)",
      "Use keras_rigl.strip(model) and then model.export(path) (Keras's own "
      "exporter for this backend) or keras.saving.save_model(model, 'model.keras').")
  if format not in EXPORT_FORMATS:
    raise ValueError(f"Unknown export format {format!r}; use one of {EXPORT_FORMATS}.")
  try:
    path = os.fspath(path)
  except TypeError:
    raise TypeError(f"export path must be a str or os.PathLike, got {path!r}.") from None
  _check_destination(path, format, overwrite)
  plain = strip(model, keep_compressed=format == "saved_model")
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
