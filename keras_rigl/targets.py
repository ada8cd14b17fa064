"""The record of one sparse weight that a mask update acts on.

Both storages use it: a SparseWrapper's masked weight (`weight`, `mask`, its
`wrapper` and `index`) and a compressed layer's `CompressedWeight` (no mask:
its positions are the mask). The schedulers fill in the optimizer `slots`.

Example:
>>> import tensorflow as tf
>>> target = Target(tf.Variable(tf.ones([3, 4])), "dense/kernel", seed=0)
>>> target.size, target.key == Target(tf.ones([3, 4]), "dense/kernel", 0).key
(12, True)
"""

import numpy as np

from keras_rigl.masks import name_seed


class Target:
  """One sparse weight: its variables, name, RNG key and optimizer slots.

  Args:
    weight: the weight variable (or a compressed layer's `CompressedWeight`).
    name: "layer/weight_key", unique in the model; with `seed` it keys the
      stateless random numbers of this weight (growth, initial values).
    seed: the scheduler's integer seed.
    mask: the 0/1 mask variable (masked storage), else None.
    wrapper, index: the SparseWrapper holding it and the weight's position in
      ``wrapper.masked_weights`` (masked storage), else None.
  """

  def __init__(self, weight, name, seed, mask=None, wrapper=None, index=None):
    self.weight = weight
    self.mask = mask
    self.wrapper = wrapper
    self.index = index
    self.name = name
    seed_pair = name_seed(seed, name)
    # One int64 key from (seed, name) for stateless RNG seeds [key, step].
    self.key = (seed_pair[0] << 31) | seed_pair[1]
    self.size = int(np.prod(tuple(weight.shape)))
    self.slots = []
    self.max_update = None  # Static bound on moved connections (TPU).
    self.tap = None  # Its wrapper's GradientTap, when a scheduler enables one.

  @classmethod
  def of_wrapper(cls, wrapper, index, seed):
    """The target of ``wrapper.masked_weights[index]``."""
    weight, mask = wrapper.masked_weights[index]
    return cls(weight, f"{wrapper.layer.name}/{wrapper.weight_keys[index]}", seed,
               mask=mask, wrapper=wrapper, index=index)
