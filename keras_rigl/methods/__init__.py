"""Sparse-training methods: one module per method over one base.

`base.MaskScheduler` (finding the sparse weights, timing, the compiled
update), `drop_grow.DropGrowScheduler` (drop by magnitude, grow by a score:
RigL, SET, SNFS), then one module per method: `rigl` (with `rigl_data`, its
separate-data handling), `set`, `snfs`, `pruning`.
"""

from keras_rigl.methods.pruning import MagnitudePruningScheduler
from keras_rigl.methods.rigl import RigLScheduler
from keras_rigl.methods.set import SETScheduler
from keras_rigl.methods.snfs import SNFSScheduler
