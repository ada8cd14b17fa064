"""Bad inputs found by the second audit (issue 18): wrong types, shapes, strings for objects.

Each row used to end in a raw AttributeError/TypeError/TF error (or, for the
flags, in a setting silently ignored); each now fails where the value enters,
with a message that names it and the fix.
"""

import numpy as np
import tensorflow as tf

import keras_rigl as kr
from keras_rigl import recipes
from keras_rigl._keras import keras
from tests.bad_inputs import BadInput
from tests.bad_inputs.train_flags import _validate


def _mlp():
  return keras.Sequential([keras.Input((12,)), keras.layers.Dense(8, name="fc1"),
                           keras.layers.Dense(3, name="fc2")])


def _data(features=12, one_hot=False):
  x = np.zeros((8, features), "float32")
  y = np.eye(3, dtype="float32")[np.zeros(8, int)] if one_hot else np.zeros(8, "int32")
  return tf.data.Dataset.from_tensor_slices((x, y)).batch(4)


def _sce():
  return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


_M = np.ones((4, 3), "float32")
_CONFIG = "fashion_mnist_lenet300_100"


def _config(**changes):
  return recipes.get_config(_CONFIG).replace(**changes)


def _lm(**overrides):
  from examples import train_lm  # pylint: disable=g-import-not-at-top
  return train_lm.LMConfig(**overrides).check()


def _fit_rigl_mirrored(one_hot):
  """RigLScheduler(data) under a one-device MirroredStrategy (the check used to be skipped)."""
  from tests.bad_inputs import schedulers as table  # pylint: disable=g-import-not-at-top
  strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
  with strategy.scope():
    model = table._model()  # pylint: disable=protected-access
    model.compile(keras.optimizers.SGD(0.1),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  y = np.eye(2, dtype="float32")[table._Y] if one_hot else table._Y  # pylint: disable=protected-access
  data = table._data(y=y)  # pylint: disable=protected-access
  model.fit(table._data(), epochs=1, verbose=0,  # pylint: disable=protected-access
            callbacks=[kr.RigLScheduler(data, end_step=10)])


def _row(name, call, error, says, what):
  return BadInput(name, call, error, says, what)


def _flag_row(name, args, says, what):
  return BadInput(f"train_flags/{name}", lambda: _validate(*args), recipes.SetupError,
                  says, what)


ROWS = [
    # SparseWrapper, sparsify, layer_sparsities, sparsity_report.
    _row("wrapper/layer_string", lambda: kr.SparseWrapper("dense"), TypeError,
         ("SparseWrapper", "layer instance", "Dense(64)"),
         "SparseWrapper given a layer's name instead of a layer."),
    _row("wrapper/layer_none", lambda: kr.SparseWrapper(None), TypeError,
         ("SparseWrapper", "layer instance"), "SparseWrapper(None)."),
    _row("wrapper/layer_class", lambda: kr.SparseWrapper(keras.layers.Dense, 0.5), TypeError,
         ("SparseWrapper", "layer instance"),
         "SparseWrapper given the layer class (keras.layers.Dense) instead of an instance."),
    _row("sparsify/erk_power_scale_string",
         lambda: kr.sparsify(_mlp(), 0.9, erk_power_scale="1"), ValueError,
         ("erk_power_scale", ">= 0", "a number"), "A string erk_power_scale."),
    _row("sparsify/custom_sparsity_list",
         lambda: kr.sparsify(_mlp(), 0.9, custom_sparsity=["fc1"]), TypeError,
         ("custom_sparsity", "dict", "{'fc1': 0.8}"),
         "custom_sparsity given as a list of names instead of {name: sparsity}."),
    _row("sparsify/exclude_int", lambda: kr.sparsify(_mlp(), 0.9, exclude=5), TypeError,
         ("exclude", "layer names", "predicate"), "exclude given a number."),
    _row("sparsify/exclude_list_of_ints", lambda: kr.sparsify(_mlp(), 0.9, exclude=[0]),
         TypeError, ("exclude", "list of strings"),
         "exclude given layer indices instead of names."),
    _row("layer_sparsities/shape_string",
         lambda: kr.layer_sparsities({"fc1": "784x300"}, 0.9), ValueError,
         ("'fc1'", "tuple of integers"), "A shape written as a string."),
    _row("layer_sparsities/shape_float",
         lambda: kr.layer_sparsities({"fc1": (784.5, 300)}, 0.9), ValueError,
         ("'fc1'", "tuple of integers"), "A shape with a non-integer dimension."),
    _row("sparsity_report/none", lambda: kr.sparsity_report(None), TypeError,
         ("sparsity_report", "keras Model"), "sparsity_report(None)."),
    _row("sparsity_report/string", lambda: kr.sparsity_report("model.keras"), TypeError,
         ("sparsity_report", "keras Model", "sparsity_report(model)"),
         "sparsity_report given a file name instead of a model."),
    # update_mask.
    _row("update_mask/weights_shape",
         lambda: kr.update_mask(_M, np.ones((3, 4), "float32"), _M, 0.3), ValueError,
         ("weights", "[3, 4]", "same shape"), "update_mask with weights of another shape."),
    _row("update_mask/grow_scores_shape",
         lambda: kr.update_mask(_M, _M, np.ones((2, 2), "float32"), 0.3), ValueError,
         ("grow_scores", "same shape"), "update_mask with grow scores of another shape."),
    _row("update_mask/drop_scores_shape",
         lambda: kr.update_mask(_M, _M, _M, 0.3, drop_scores=np.ones(5, "float32")),
         ValueError, ("drop_scores", "same shape"),
         "update_mask with drop scores of another shape."),
    _row("update_mask/drop_fraction_above_one", lambda: kr.update_mask(_M, _M, _M, 1.5),
         ValueError, ("drop_fraction", "[0, 1]", "e.g. 0.3"),
         "update_mask with a drop fraction of 1.5."),
    _row("update_mask/drop_fraction_string", lambda: kr.update_mask(_M, _M, _M, "0.3"),
         TypeError, ("drop_fraction", "number"), "update_mask with a string drop fraction."),
    _row("update_mask/mask_none", lambda: kr.update_mask(None, _M, _M, 0.3), TypeError,
         ("mask", "tensor"), "update_mask(None, ...)."),
    # snip.
    _row("snip/loss_unknown_name", lambda: kr.snip(_mlp(), _data(), 0.9, loss="crossentropy"),
         ValueError, ("snip loss", "not a Keras loss", "sparse_categorical_crossentropy"),
         "snip with a misspelt loss name."),
    _row("snip/loss_not_callable", lambda: kr.snip(_mlp(), _data(), 0.9, loss=3), TypeError,
         ("snip loss", "loss="), "snip with a number as the loss."),
    _row("snip/wrong_feature_shape", lambda: kr.snip(_mlp(), _data(features=5), 0.9,
                                                     loss=_sce()),
         ValueError, ("snip data", "does not fit", "fix"),
         "snip data with 5 features for a model that takes 12."),
    _row("snip/one_hot_labels_with_sparse_loss",
         lambda: kr.snip(_mlp(), _data(one_hot=True), 0.9, loss=_sce()), ValueError,
         ("snip data", "integer labels for a sparse loss"),
         "snip with one-hot labels and a sparse loss."),
    # Models and data.
    _row("models/wide_resnet_depth_string", lambda: kr.models.wide_resnet("22", 2),
         ValueError, ("depth", "6n + 4"), "wide_resnet('22', 2)."),
    _row("models/wide_resnet_width_string", lambda: kr.models.wide_resnet(22, "2"),
         ValueError, ("width", "positive"), "wide_resnet(22, '2')."),
    _row("data/load_batch_size_string",
         lambda: kr.data.load("fashion_mnist", "train", batch_size="128"), ValueError,
         ("batch_size", "positive integer", "batch_size=128"),
         "data.load with a string batch size."),
    _row("data/distribute_without_strategy",
         lambda: kr.data.distribute(None, lambda ctx: None), TypeError,
         ("distribute", "tf.distribute.Strategy"), "data.distribute(None, fn)."),
    # Recipes.
    _row("recipes/validate_without_config",
         lambda: recipes.validate(None, recipes.RunOptions()), TypeError,
         ("validate", "Config", "get_config"), "recipes.validate(None, options)."),
    _row("recipes/validate_without_options",
         lambda: recipes.validate(recipes.get_config(_CONFIG), None), TypeError,
         ("RunOptions",), "recipes.validate(config, None)."),
    _row("recipes/make_plan_without_config",
         lambda: recipes.make_plan(None, kr.data.dataset_info("fashion_mnist")), TypeError,
         ("make_plan", "Config"), "recipes.make_plan(None, info)."),
    _row("recipes/make_plan_without_info",
         lambda: recipes.make_plan(recipes.get_config(_CONFIG), "fashion_mnist"), TypeError,
         ("make_plan", "DatasetInfo", "dataset_info"),
         "recipes.make_plan given the dataset's name instead of its info."),
    _row("recipes/rebuild_not_a_model", lambda: recipes.rebuild(None, width=0.5), TypeError,
         ("rebuild", "keras Model"), "recipes.rebuild(None)."),
    _row("recipes/rebuild_width_zero", lambda: recipes.rebuild(_mlp(), width=0), ValueError,
         ("width", "> 0"), "recipes.rebuild(model, width=0)."),
    _row("recipes/small_dense_width_without_config",
         lambda: recipes.small_dense_width(None, (28, 28, 1), 10), TypeError,
         ("small_dense_width", "Config"), "recipes.small_dense_width(None, ...)."),
    _row("recipes/lr_peak_negative", lambda: recipes.WarmupPiecewiseDecay(-0.1), ValueError,
         ("peak", "> 0", "e.g. 0.1"), "WarmupPiecewiseDecay(-0.1)."),
    _row("recipes/lr_warmup_negative", lambda: recipes.WarmupPiecewiseDecay(0.1, -5),
         ValueError, ("warmup_steps", ">= 0"), "WarmupPiecewiseDecay with negative warm-up."),
    _row("recipes/lr_boundaries_decreasing",
         lambda: recipes.WarmupPiecewiseDecay(0.1, 0, [200, 100], [0.1, 0.01]), ValueError,
         ("boundaries", "must not decrease"), "WarmupPiecewiseDecay boundaries out of order."),
    _row("recipes/label_smoothing_above_one",
         lambda: recipes.SparseCrossEntropy(label_smoothing=1.5), ValueError,
         ("label_smoothing", "[0, 1)"), "SparseCrossEntropy(label_smoothing=1.5)."),
    _row("recipes/label_smoothing_string",
         lambda: recipes.SparseCrossEntropy(label_smoothing="0.1"), ValueError,
         ("label_smoothing", "number"), "SparseCrossEntropy with a string smoothing."),
    _row("recipes/config_batch_size_string", lambda: _config(batch_size="128"), TypeError,
         ("batch_size", "integer"), "Config.replace(batch_size='128')."),
    _row("recipes/config_rigl_sparsity_zero", lambda: _config(method="rigl", sparsity=0.0),
         ValueError, ("--method=rigl", "--sparsity > 0"),
         "A sparse method at sparsity 0 (no layer would be sparse)."),
    _row("recipes/config_learning_rate_inf", lambda: _config(learning_rate=float("inf")),
         ValueError, ("learning_rate", "finite"), "An infinite learning rate."),
    _row("rigl_data/one_hot_with_sparse_loss_mirrored", lambda: _fit_rigl_mirrored(True),
         ValueError, ("RigLScheduler data", "label format", "integer labels"),
         "one-hot RigL data with a sparse loss under MirroredStrategy (raw TF error at "
         "the first update before)."),
    # examples/train.py flags.
    _flag_row("prune_rate_without_snfs", ["--method=rigl", "--prune_rate=0.3"],
              ("--prune_rate", "--method=snfs", "drop --prune_rate"),
              "`--prune_rate` with --method=rigl (it would be ignored)."),
    _flag_row("snfs_momentum_without_snfs", ["--method=set", "--snfs_momentum=0.5"],
              ("--snfs_momentum", "--method=snfs"),
              "`--snfs_momentum` with --method=set (it would be ignored)."),
    _flag_row("drop_fraction_with_static", ["--method=static", "--drop_fraction=0.5"],
              ("--drop_fraction", "--method=rigl", "--method=static"),
              "`--drop_fraction` with a method that never drops."),
    _flag_row("pruning_freq_without_pruning", ["--method=rigl", "--pruning_freq=50"],
              ("--pruning_freq", "--method=pruning"),
              "`--pruning_freq` with --method=rigl (it would be ignored)."),
    _flag_row("redistribution_with_min_fan_in",
              ["--method=rigl", "--redistribution=momentum", "--min_fan_in=1"],
              ("--redistribution", "--min_fan_in", "drop one"),
              "`--redistribution` and `--min_fan_in` together (failed only at the first step)."),
    _flag_row("redistribution_on_tpu",
              ["--redistribution=momentum", "--strategy=tpu", "--tpu=my-tpu"],
              ("--redistribution", "--strategy=tpu", "--redistribution=none"),
              "`--redistribution` under TPUStrategy (needs dynamic shapes)."),
    _flag_row("infinite_learning_rate", ["--learning_rate=inf"],
              ("learning_rate", "finite"), "`--learning_rate=inf`."),
    _flag_row("infinite_multiplier", ["--training_steps_multiplier=inf"],
              ("--training_steps_multiplier", "finite"),
              "`--training_steps_multiplier=inf` (was an OverflowError)."),
    _flag_row("rigl_sparsity_zero", ["--method=rigl", "--sparsity=0"],
              ("--method=rigl", "--sparsity > 0"),
              "`--sparsity=0` with RigL (no layer to update; failed at the first step)."),
    # examples/train_lm.py settings.
    _row("train_lm/readout_not_a_number", lambda: _lm(readout=("a",)), ValueError,
         ("--readout", "positive layer sizes"), "train_lm.py --readout=a."),
    _row("train_lm/learning_rate_string", lambda: _lm(learning_rate="x"), ValueError,
         ("--learning_rate", "number"), "LMConfig(learning_rate='x')."),
    _row("train_lm/drop_fraction_none", lambda: _lm(drop_fraction=None), ValueError,
         ("--drop_fraction", "number"), "LMConfig(drop_fraction=None)."),
    _row("train_lm/end_step_string", lambda: _lm(end_step="5"), ValueError,
         ("--end_step", "integer"), "LMConfig(end_step='5')."),
    _row("train_lm/seed_negative", lambda: _lm(seed=-1), ValueError,
         ("--seed", ">= 0"), "train_lm.py --seed=-1."),
    _row("train_lm/drop_fraction_schedule", lambda: _lm(drop_fraction_schedule="linear"),
         ValueError, ("--drop_fraction_schedule", "cosine"),
         "LMConfig(drop_fraction_schedule='linear')."),
    _row("train_lm/verbose", lambda: _lm(verbose=5), ValueError, ("--verbose", "0, 1 or 2"),
         "LMConfig(verbose=5)."),
    _row("train_lm/eval_windows_none", lambda: _lm(eval_windows=None), ValueError,
         ("--eval_windows", "integer"), "LMConfig(eval_windows=None)."),
]
