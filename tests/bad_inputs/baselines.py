"""Bad inputs to the baselines' helpers: sparsity_for_flops, snip."""

import keras_rigl as kr
from tests.bad_inputs import BadInput


def _lenet():
  return kr.models.lenet300_100()


ROWS = [
    BadInput("sparsity_for_flops/ratio_zero", lambda: kr.sparsity_for_flops(_lenet(), 0.0),
             ValueError, ("flops_ratio", "(0, 1]"), "A FLOPs ratio of 0."),
    BadInput("sparsity_for_flops/ratio_above_one", lambda: kr.sparsity_for_flops(_lenet(), 1.5),
             ValueError, ("flops_ratio", "(0, 1]"), "A FLOPs ratio above 1."),
    BadInput("sparsity_for_flops/ratio_string", lambda: kr.sparsity_for_flops(_lenet(), "0.2"),
             TypeError, ("flops_ratio", "number"), "A FLOPs ratio given as a string."),
    BadInput("sparsity_for_flops/distribution",
             lambda: kr.sparsity_for_flops(_lenet(), 0.2, "global"), ValueError,
             ("distribution", "'erk'"), "An unknown distribution."),
    BadInput("sparsity_for_flops/exclude_unknown",
             lambda: kr.sparsity_for_flops(_lenet(), 0.2, exclude=["fc9"]), ValueError,
             ("exclude", "fc9"), "exclude naming a layer the model lacks."),
    BadInput("sparsity_for_flops/unreachable",
             lambda: kr.sparsity_for_flops(_lenet(), 0.01, exclude=["fc1"]), ValueError,
             ("cannot be reached", "ratio above"),
             "A FLOPs ratio below what the dense (excluded) layers already cost."),
]


def _toy_data():
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  x = np.zeros((8, 784), "float32")
  return tf.data.Dataset.from_tensor_slices((x, np.zeros(8, "int32"))).batch(4)


def _ce():
  return kr.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


ROWS += [
    BadInput("snip/distribution", lambda: kr.snip(_lenet(), _toy_data(), 0.9, "random", loss=_ce()),
             ValueError, ("distribution", "'global'"), "An unknown SNIP distribution."),
    BadInput("snip/batches_zero", lambda: kr.snip(_lenet(), _toy_data(), 0.9, batches=0, loss=_ce()),
             ValueError, ("batches", ">= 1"), "batches=0."),
    BadInput("snip/no_loss", lambda: kr.snip(_lenet(), _toy_data(), 0.9), ValueError,
             ("loss", "compiled"), "An uncompiled model and no loss."),
    BadInput("snip/numpy_data", lambda: kr.snip(_lenet(), __import__("numpy").zeros((8, 784)), 0.9,
                                                loss=_ce()),
             ValueError, ("snip data", "from_tensor_slices"), "A bare numpy array as data."),
    BadInput("snip/empty_data", lambda: kr.snip(_lenet(), _toy_data().take(0), 0.9, loss=_ce()),
             ValueError, ("snip data", "at least one"), "An empty dataset."),
    BadInput("snip/x_only", lambda: kr.snip(_lenet(), _toy_data().map(lambda x, y: x), 0.9,
                                            loss=_ce()),
             ValueError, ("snip data", "(x, y)"), "A dataset of inputs without labels."),
    BadInput("snip/sparsity", lambda: kr.snip(_lenet(), _toy_data(), 1.0, loss=_ce()),
             ValueError, ("sparsity", "[0, 1)"), "SNIP sparsity of 1."),
]


def _data12():
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  x = np.random.default_rng(0).normal(size=(16, 12)).astype("float32")
  return tf.data.Dataset.from_tensor_slices((x, (x[:, 0] > 0).astype("int32"))).batch(8)


def _fit_compressed(callback, capacity=None):
  """A compressed-storage MLP fitted for 2 steps with `callback`."""
  keras = kr.keras
  model = kr.sparsify(keras.Sequential([keras.Input((12,)), keras.layers.Dense(8, name="fc1"),
                                        keras.layers.Dense(2, name="logits")]),
                      0.8, "uniform", storage="compressed", capacity=capacity)
  model.compile("sgd", _ce())
  model.fit(_data12(), epochs=1, verbose=0, callbacks=[callback])


ROWS += [
    BadInput("snfs/prune_rate_above_one", lambda: kr.SNFSScheduler(prune_rate=1.5), ValueError,
             ("prune_rate", "[0, 1]"), "SNFSScheduler(prune_rate=1.5)."),
    BadInput("snfs/prune_rate_string", lambda: kr.SNFSScheduler(prune_rate="0.5"), ValueError,
             ("prune_rate", "float"), "prune_rate given as a string."),
    BadInput("snfs/momentum_one", lambda: kr.SNFSScheduler(momentum=1.0), ValueError,
             ("momentum", "[0, 1)"), "momentum=1 (the EMA would never take a gradient)."),
    BadInput("snfs/momentum_negative", lambda: kr.SNFSScheduler(momentum=-0.1), ValueError,
             ("momentum", "[0, 1)"), "A negative momentum."),
    BadInput("snfs/redistribution_string",
             lambda: kr.SNFSScheduler(redistribution="momentum"), ValueError,
             ("redistribution", "True", "False"),
             "SNFSScheduler(redistribution='momentum') (it is a bool; RigL takes names)."),
    BadInput("snfs/prune_rate_schedule", lambda: kr.SNFSScheduler(prune_rate_schedule="linear"),
             ValueError, ("prune_rate_schedule", "cosine"), "An unknown prune_rate_schedule."),
    BadInput("snfs/data_as_first_argument", lambda: kr.SNFSScheduler(_data12()), ValueError,
             ("takes no data", "update_freq=100"),
             "A dataset passed first, as to RigLScheduler (SNFS needs none)."),
    BadInput("snfs/compressed_storage", lambda: _fit_compressed(kr.SNFSScheduler(update_freq=1)),
             ValueError, ("SNFS", "compressed", "dense gradient", "fixed number",
                          'storage="masked"'),
             "SNFS on a model sparsified with storage='compressed'."),
    BadInput("rigl/redistribution_unknown",
             lambda: kr.RigLScheduler(_data12(), redistribution="magnitude"), ValueError,
             ("redistribution", "'momentum'", "'gradient'"),
             "RigLScheduler(redistribution='magnitude')."),
    BadInput("rigl/redistribution_true",
             lambda: kr.RigLScheduler(_data12(), redistribution=True), ValueError,
             ("redistribution", "'momentum'"),
             "RigLScheduler(redistribution=True) (it takes a name)."),
    BadInput("rigl/redistribution_compressed",
             lambda: _fit_compressed(kr.RigLScheduler(_data12(), update_freq=1,
                                                      redistribution="gradient")),
             ValueError, ("redistribution='gradient'", "compressed", "fixed number",
                          "capacity=1.25", 'storage="masked"'),
             "RigL redistribution on compressed layers built without capacity."),
    BadInput("rigl/min_fan_in_compressed_capacity",
             lambda: _fit_compressed(kr.RigLScheduler(_data12(), update_freq=1, min_fan_in=1),
                                     capacity=1.25),
             ValueError, ("min_fan_in=1", "capacity", "capacity=None", "min_fan_in=0"),
             "min_fan_in on compressed layers built with capacity (not supported yet)."),
    BadInput("rigl/redistribution_with_min_fan_in",
             lambda: kr.RigLScheduler(_data12(), redistribution="momentum", min_fan_in=1),
             ValueError, ("min_fan_in=1", "redistribution='momentum'"),
             "RigL with both min_fan_in and redistribution (not combined yet)."),
]


ROWS += [
    BadInput("min_fan_in/negative", lambda: kr.RigLScheduler(_toy_data(), min_fan_in=-1),
             ValueError, ("RigLScheduler", "min_fan_in", ">= 0", "min_fan_in=1"),
             "A negative minimum fan-in."),
    BadInput("min_fan_in/float", lambda: kr.SETScheduler(update_freq=10, min_fan_in=1.5),
             ValueError, ("SETScheduler", "min_fan_in", "integer", "min_fan_in=1"),
             "A fractional minimum fan-in."),
    BadInput("min_fan_in/bool", lambda: kr.SETScheduler(update_freq=10, min_fan_in=True),
             ValueError, ("min_fan_in", "integer", "got True"),
             "min_fan_in=True (a bool is not a count)."),
    BadInput("min_fan_in/string", lambda: kr.RigLScheduler(_toy_data(), min_fan_in="1"),
             ValueError, ("min_fan_in", "integer", "min_fan_in=1"),
             "A minimum fan-in given as a string."),
    BadInput("min_fan_in/update_mask_negative",
             lambda: kr.update_mask(__import__("numpy").ones((4, 2), "float32"),
                                    __import__("numpy").ones((4, 2), "float32"),
                                    __import__("numpy").ones((4, 2), "float32"), 0.5,
                                    min_fan_in=-2),
             ValueError, ("min_fan_in", ">= 0"), "update_mask with a negative min_fan_in."),
    BadInput("min_fan_in/static_shapes",
             lambda: kr.update_mask(__import__("numpy").ones((4, 2), "float32"),
                                    __import__("numpy").ones((4, 2), "float32"),
                                    __import__("numpy").ones((4, 2), "float32"), 0.5,
                                    max_update=4, min_fan_in=1),
             ValueError, ("min_fan_in", "max_update", "min_fan_in=0"),
             "min_fan_in with static shapes (max_update, as under TPUStrategy)."),
]
