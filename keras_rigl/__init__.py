"""keras-rigl: dynamic sparse training (RigL) for Keras 3 and tf_keras."""

from keras_rigl import backend
from keras_rigl import data
from keras_rigl import layer_registry
from keras_rigl import layers
from keras_rigl import models
from keras_rigl._keras import FLAVOUR as keras_flavour
from keras_rigl._keras import keras
from keras_rigl.distributions import layer_sparsities
from keras_rigl.equal_flops import sparsity_for_flops
from keras_rigl.export import export
from keras_rigl.flops import count_flops, model_size_bytes, training_flops
from keras_rigl.masks import update_mask
from keras_rigl import methods
from keras_rigl.methods import (MagnitudePruningScheduler, RigLScheduler,
                                SETScheduler, SNFSScheduler)
from keras_rigl.snip import snip
from keras_rigl.surgery import sparsify, sparsity_report, strip
from keras_rigl.wrapper import SparseWrapper
# Last: the recipes build on the names above.
from keras_rigl import recipes  # pylint: disable=g-bad-import-order

__version__ = "0.1.0"
