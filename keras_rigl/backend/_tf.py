"""`tf`: TensorFlow, imported on first use (not when keras_rigl is imported).

keras_rigl's modules write ``from keras_rigl.backend import tf`` instead of
``import tensorflow as tf``: the name works exactly like the module (its
first attribute access imports TensorFlow), so that ``import keras_rigl`` and
the masked storage and schedulers on Keras 3's JAX or PyTorch backend never
import TensorFlow, which need not be installed there. Code that runs at import
time must not touch it (no ``tf.`` in decorators, base classes, default
arguments or module-level constants).

Example:
>>> import sys
>>> tf.__name__
'tensorflow'
>>> isinstance(tf.constant(1.0), tf.Tensor)
True
"""

import importlib
import sys
import types


# TensorFlow's own names that look like Python's special ones.
_PUBLIC_DUNDERS = ("__internal__", "__version__", "__operators__")


class LazyModule(types.ModuleType):
  """A module that is imported when one of its attributes is first read."""

  def __init__(self, name):
    super().__init__(name)
    self.__dict__["_lazy_module"] = None

  def _load(self):
    module = self.__dict__["_lazy_module"]
    if module is None:
      module = importlib.import_module(self.__name__)
      self.__dict__["_lazy_module"] = module
    return module

  def __getattr__(self, name):
    if (name.startswith("__") and name.endswith("__") and name not in _PUBLIC_DUNDERS
        and self.__dict__["_lazy_module"] is None):
      # copy, pickle, inspect and doctest probe these: no import for them.
      raise AttributeError(name)
    return getattr(self._load(), name)

  def __dir__(self):
    return dir(self._load())

  def __repr__(self):
    loaded = self.__dict__["_lazy_module"] is not None
    return f"<lazy module {self.__name__!r} ({'imported' if loaded else 'not imported'})>"


tf = LazyModule("tensorflow")


def tf_types(*names):
  """TensorFlow's classes `names` (e.g. "errors.InvalidArgumentError") as a tuple,
  or ``()`` when TensorFlow has not been imported: then no object can be one.

  For ``isinstance`` checks and ``except`` clauses on paths that also run on
  JAX / PyTorch, without importing TensorFlow there.

  Example:
  >>> isinstance(1.0, tf_types("Tensor", "Variable"))
  False
  >>> try:
  ...   raise ValueError("x")
  ... except (ValueError,) + tf_types("errors.InvalidArgumentError"):
  ...   pass
  """
  if "tensorflow" not in sys.modules:
    return ()
  types_ = []
  for name in names:
    value = tf
    for part in name.split("."):
      value = getattr(value, part)
    types_.append(value)
  return tuple(types_)
