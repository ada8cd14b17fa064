"""Sparse-training methods: one module per method over one base, and a registry.

`base.MaskScheduler` (finding the sparse weights, timing, the compiled
update), `drop_grow.DropGrowScheduler` (drop by magnitude, grow by a score:
RigL, SET, SNFS), then one module per method: `rigl` (with `rigl_data`, its
separate-data handling), `set`, `snfs`, `pruning`. `registry` maps each
method name to its callback, FLOPs kind and recipe arguments; `builtin`
registers the methods above.

A method of your own: subclass `DropGrowScheduler` (or `MaskScheduler`) and
``keras_rigl.methods.register(keras_rigl.methods.Method("name", MyScheduler,
...))`` (see `keras_rigl.methods.registry`); the recipes, ``train.py
--method=name`` and `keras_rigl.training_flops` then know it.

Example:
>>> import keras_rigl as kr
>>> kr.methods.get("rigl").scheduler is kr.RigLScheduler
True
"""

from keras_rigl.methods import builtin as _builtin  # Registers the methods below.
from keras_rigl.methods.base import MaskScheduler
from keras_rigl.methods.drop_grow import DropGrowScheduler
from keras_rigl.methods.pruning import MagnitudePruningScheduler
from keras_rigl.methods.registry import Method, get, names, register, unregister
from keras_rigl.methods.rigl import RigLScheduler
from keras_rigl.methods.set import SETScheduler
from keras_rigl.methods.snfs import SNFSScheduler
