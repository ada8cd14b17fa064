"""Compressed sparse layers: only the active values and their positions are stored.

`SparseDense`, `SparsePointwiseConv2D` and `SparseEmbedding` keep a kernel
of dense shape ``[n_rows, n_cols]`` as ``values[nnz]`` + flat positions
``indices[nnz]``: memory, optimizer slots and checkpoints are O(nnz). The RigL
and SET schedulers update them with the same rules as `SparseWrapper` layers
(see `keras_rigl.layers.update`). Built with ``capacity=`` they keep room
for their count to move, which RigL's layer-wise redistribution needs (see
`keras_rigl.layers.capacity`).
"""

from keras_rigl.layers.base import CompressedLayer, CompressedWeight, capture_layer_io
from keras_rigl.layers.dense import SparseDense, SparsePointwiseConv2D
from keras_rigl.layers.embedding import SparseEmbedding
