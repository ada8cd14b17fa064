"""Old registered names of the recipes' Keras objects, so that old files load.

Until the recipes package existed, examples/train.py defined the learning-rate
schedule and the loss and registered them as
``keras_rigl_examples>WarmupPiecewiseDecay`` and
``keras_rigl_examples>SparseCrossEntropy``; models saved then (``.keras``
files, SavedModels with their compile config) name them so. Those names are
registered here as aliases: loading gives today's
`keras_rigl.recipes.WarmupPiecewiseDecay` / `SparseCrossEntropy` with a
DeprecationWarning that says how to store the new name (save the model
again). New saves always use the ``keras_rigl>`` names.

Example:
>>> import warnings
>>> from keras_rigl._keras import keras
>>> from keras_rigl.recipes import legacy_names
>>> old = keras.utils.get_registered_object("keras_rigl_examples>SparseCrossEntropy")
>>> with warnings.catch_warnings(record=True) as caught:
...   warnings.simplefilter("always")
...   loss = old.from_config({"label_smoothing": 0.1})
>>> type(loss).__name__, loss.label_smoothing, caught[0].category.__name__
('SparseCrossEntropy', 0.1, 'DeprecationWarning')
"""

import warnings

from keras_rigl._keras import keras
from keras_rigl.recipes.losses import SparseCrossEntropy
from keras_rigl.recipes.schedules import WarmupPiecewiseDecay

OLD_PACKAGE = "keras_rigl_examples"
NEW_PACKAGE = "keras_rigl"


def _alias(cls):
  """Registers `OLD_PACKAGE>Name` for `cls`: loads as `cls`, with a warning."""
  name = cls.__name__

  def from_config(alias, config):  # pylint: disable=unused-argument
    warnings.warn(
        f"Loaded {OLD_PACKAGE}>{name}, the name examples/train.py used before the "
        f"recipes package; it is keras_rigl.recipes.{name} ({NEW_PACKAGE}>{name}) now. "
        "Save the model again to store the new name; the old one will go.",
        DeprecationWarning, stacklevel=2)
    return cls.from_config(config)

  alias = type(f"Legacy{name}", (cls,), {
      "__doc__": f"The old registered name of `{name}`; loads as `{name}`.",
      "from_config": classmethod(from_config)})
  return keras.utils.register_keras_serializable(package=OLD_PACKAGE, name=name)(alias)


LegacyWarmupPiecewiseDecay = _alias(WarmupPiecewiseDecay)
LegacySparseCrossEntropy = _alias(SparseCrossEntropy)
