"""Walking the layers of a model: the one place that knows how to descend.

`walk_layers` visits every layer under any model (Sequential, Functional,
subclassed, nested), without entering a SparseWrapper (its inner layer is its
own business). `graph_leaves` visits the layers of a graph model with their
path, graph and call count, entering the nested models a predicate accepts
(the FLOPs count enters every model); `graph_layers` is its plain form,
entering nested Sequential/Functional models only (what model surgery can
rebuild).

Example:
>>> from keras_rigl._keras import keras
>>> inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
>>> outer = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(1, name="o")])
>>> [l.name for l in graph_layers(outer)]
['d', 'o']
"""

from typing import Any, NamedTuple

from keras_rigl import _keras
from keras_rigl._keras import keras
from keras_rigl.wrapper import SparseWrapper


class Leaf(NamedTuple):
  """A leaf layer met by `graph_leaves`.

  path: the names of the models entered, each followed by "/" ("" at the top).
  layer: the leaf layer. graph: the model whose `layers` list holds it.
  calls: how often one call of the top model runs it (the product of the
  entered models' call counts).
  """
  path: str
  layer: Any
  graph: Any
  calls: int


def _is_graph(layer):
  return isinstance(layer, keras.Model) and _keras.is_graph_model(layer)


def graph_leaves(model, enter=_is_graph, calls=None, path="", times=1):
  """Yields a `Leaf` per layer of `model`, entering the models `enter` accepts.

  `calls(graph, model)`, if given, counts the calls of an entered model
  inside its graph (the FLOPs count multiplies by it); else 1.

  >>> from keras_rigl._keras import keras
  >>> inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")], name="m")
  >>> outer = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(1, name="o")])
  >>> [(leaf.path, leaf.layer.name) for leaf in graph_leaves(outer)]
  [('m/', 'd'), ('', 'o')]
  """
  for layer in model.layers:
    if enter(layer):
      inner = calls(model, layer) if calls is not None else 1
      yield from graph_leaves(layer, enter, calls, f"{path}{layer.name}/", times * inner)
    else:
      yield Leaf(path, layer, model, times)


def graph_layers(model):
  """Every layer of a graph model, entering nested Sequential/Functional models."""
  for leaf in graph_leaves(model):
    yield leaf.layer


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
