"""Bad inputs to the compressed storage: sparsify(storage=...), the layers, strip's size limit."""

import tensorflow as tf

import keras_rigl as kr
from keras_rigl._keras import keras
from tests.bad_inputs import BadInput


def _mlp(width=8):
  return keras.Sequential([keras.Input((12,)), keras.layers.Dense(width, name="fc1")])


def _strip_too_large():
  model = keras.Sequential([keras.Input((1024,)), keras.layers.Dense(1024, name="big")])
  kr.strip(kr.sparsify(model, 0.9, storage="compressed"), max_dense_bytes=1000)


ROWS = [
    BadInput("compressed/storage", lambda: kr.sparsify(_mlp(), 0.9, storage="csr"), ValueError,
             ("storage", "'compressed'"), "An unknown storage name."),
    BadInput("compressed/mask_init_dense",
             lambda: kr.sparsify(_mlp(), 0.9, storage="compressed", mask_init="dense"),
             ValueError, ("mask_init='random'", "storage='masked'"),
             "Compressed storage with all-ones masks (for pruning)."),
    BadInput("compressed/units_zero", lambda: kr.layers.SparseDense(0), ValueError,
             ("SparseDense", "positive integer"), "SparseDense with 0 units."),
    BadInput("compressed/sparsity_one", lambda: kr.layers.SparseDense(4, sparsity=1.0),
             ValueError, ("sparsity", "[0, 1)"), "SparseDense with sparsity 1."),
    BadInput("compressed/seed_string", lambda: kr.layers.SparseDense(4, seed="a"), TypeError,
             ("seed", "integer"), "SparseDense with a seed that is not an integer."),
    BadInput("compressed/orthogonal_initializer",
             lambda: kr.layers.SparseDense(4, kernel_initializer="orthogonal")(tf.ones([2, 3])),
             ValueError, ("kernel_initializer", "glorot_uniform"),
             "An initializer that cannot be drawn entry by entry (Orthogonal)."),
    BadInput("compressed/block_size", lambda: kr.layers.SparseEmbedding(10, 4, 0.5, block_size=0),
             ValueError, ("block_size", "positive integer"), "A growth block size of 0."),
    BadInput("compressed/capacity_below_one", lambda: kr.layers.SparseDense(4, capacity=0.5),
             ValueError, ("capacity", ">= 1.0", "capacity=1.25"),
             "A capacity below the initial count (slots must hold every entry)."),
    BadInput("compressed/capacity_masked_storage",
             lambda: kr.sparsify(_mlp(), 0.9, capacity=1.25), ValueError,
             ("capacity", "storage='compressed'"),
             "sparsify(capacity=...) on the masked storage (the default)."),
    BadInput("compressed/strip_too_large", _strip_too_large, ValueError,
             ("max_dense_bytes", "larger max_dense_bytes"),
             "strip of a compressed layer whose dense kernel exceeds the size limit."),
]
