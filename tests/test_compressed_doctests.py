"""The docstring examples of keras_rigl.layers run and give what they show."""

import doctest
import importlib

import pytest
import tensorflow as tf

MODULES = ["base", "dense", "embedding", "positions", "update", "static_update", "fan_in",
           "scheduling", "convert", "capacity", "statistics"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
  module = importlib.import_module(f"keras_rigl.layers.{name}")
  result = doctest.testmod(module, extraglobs={"tf": tf}, report=True,
                           optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0
  assert result.failed == 0
