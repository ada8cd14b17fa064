"""Walking the layers of a model: the one place that knows how to descend.

`walk_layers` visits every layer under any model (Sequential, Functional,
subclassed, nested), without entering a SparseWrapper (its inner layer is its
own business). `graph_layers` visits the layers of a graph model, entering
nested Sequential/Functional models only (what model surgery can rebuild).

Example:
>>> from keras_rigl._keras import keras
>>> inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
>>> outer = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(1, name="o")])
>>> [l.name for l in graph_layers(outer)]
['d', 'o']
"""

from keras_rigl import _keras
from keras_rigl._keras import keras
from keras_rigl.wrapper import SparseWrapper


def graph_layers(model):
  """Every layer of a graph model, entering nested Sequential/Functional models."""
  for layer in model.layers:
    if isinstance(layer, keras.Model) and _keras.is_graph_model(layer):
      yield from graph_layers(layer)
    else:
      yield layer


def walk_layers(model):
  """Every layer under `model` (any kind of model), not entering SparseWrappers.

  >>> from keras_rigl._keras import keras
  >>> model = keras.Sequential([keras.Input((3,)), SparseWrapper(keras.layers.Dense(2))])
  >>> layers = list(walk_layers(model))
  >>> sum(isinstance(l, SparseWrapper) for l in layers), any(type(l) is keras.layers.Dense for l in layers)
  (1, False)
  """
  for layer in model._flatten_layers(include_self=False, recursive=False):  # pylint: disable=protected-access
    yield layer
    if not isinstance(layer, SparseWrapper):
      yield from walk_layers(layer)
