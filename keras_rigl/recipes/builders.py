"""A `Config` turned into Keras objects: the model, its sparsity, its callback.

`build_model` makes the dense architecture, `sparsify_kwargs` the
`kr.sparsify` arguments that keep a config's dense layers dense,
`build_training_model` the model the config's method trains, and
`make_scheduler` the mask callback (RigL, SET, pruning, or None).

Example:
>>> import keras_rigl as kr
>>> from keras_rigl.recipes import builders, configs
>>> config = configs.get_config("fashion_mnist_lenet300_100")
>>> model, dense = builders.build_training_model(config, (28, 28, 1), 10)
>>> round(kr.sparsity_report(model).sparsity, 3), dense.count_params()
(0.9, 266610)
"""

from keras_rigl import models as _models
from keras_rigl import methods as _methods
from keras_rigl.snip import snip as _snip
from keras_rigl import surgery as _surgery
from keras_rigl._keras import keras
from keras_rigl.recipes.losses import SparseCrossEntropy
from keras_rigl.recipes.regularization import _depthwise_types
from keras_rigl.recipes.regularization import rebuild

MODEL_BUILDERS = {
    "lenet300_100": lambda shape, classes: _models.lenet300_100(shape, classes),
    "lenet5": lambda shape, classes: _models.lenet5(shape, classes),
    "wide_resnet_22_2": lambda shape, classes: _models.wide_resnet(
        22, 2, input_shape=shape, num_classes=classes),
    "resnet50": lambda shape, classes: _models.resnet50(shape, classes),
    "mobilenet_v1": lambda shape, classes: _models.mobilenet_v1(
        input_shape=shape, num_classes=classes),
    "mobilenet_v2": lambda shape, classes: _models.mobilenet_v2(
        input_shape=shape, num_classes=classes),
}


def build_model(name, input_shape, num_classes):
  """A fresh dense model from keras_rigl.models, by config name.

  Example:
  >>> build_model("lenet300_100", (28, 28, 1), 10).count_params()
  266610
  """
  if name not in MODEL_BUILDERS:
    raise ValueError(f"Unknown model {name!r}; use one of {sorted(MODEL_BUILDERS)}.")
  return MODEL_BUILDERS[name](tuple(input_shape), num_classes)


def sparsify_kwargs(config, model):
  """`kr.sparsify` arguments that keep the config's dense layers dense.

  Example:
  >>> from keras_rigl.recipes import configs
  >>> config = configs.get_config("imagenet_resnet50").replace(distribution="uniform")
  >>> sparsify_kwargs(config, build_model("lenet5", (28, 28, 1), 10))["custom_sparsity"]
  {'conv1': 0.0}
  """
  depthwise_types = _depthwise_types()
  dense = set(config.dense_layers)

  def exclude(layer):
    return layer.name in dense or (config.dense_depthwise and isinstance(layer, depthwise_types))

  names = {layer.name for layer in model.layers}
  custom = None
  if config.distribution == "uniform":
    custom = {n: 0.0 for n in config.uniform_dense_layers if n in names} or None
  return dict(distribution=config.distribution, erk_power_scale=config.erk_power_scale,
              custom_sparsity=custom, exclude=exclude)


def build_training_model(config, input_shape, num_classes, seed=0,
                         small_dense_factor=None, data=None):
  """(model, dense reference model) for the config's method; call in scope.

  dense: the plain model. small_dense: `rebuild(width=small_dense_factor)`.
  static / set / rigl: `kr.sparsify` with random masks. pruning:
  `kr.sparsify(mask_init="dense")` (all-ones masks that the pruning
  scheduler closes). snip: `kr.snip` on the first `snip_batches` batches of
  `data` (the training stream) with the run's loss, each layer keeping the
  count `snip_distribution` gives it (default: `distribution`, the same
  per-layer counts as static/set/rigl; "global": one ranking over all
  layers, as Lee et al.). Weight decay is attached as `rebuild` does.
  (Example in the module docstring.)
  """
  keras.utils.set_random_seed(seed)
  reference = build_model(config.model, input_shape, num_classes)
  decay = dict(weight_decay=config.weight_decay, decay_depthwise=config.decay_depthwise)
  if config.method == "dense":
    return rebuild(reference, **decay), reference
  if config.method == "small_dense":
    return rebuild(reference, width=small_dense_factor, **decay), reference
  base = rebuild(reference, **decay)
  if config.method == "snip":
    if data is None:
      raise ValueError("build_training_model: method 'snip' needs data=... (batches of "
                       "(x, y) to take the connection sensitivities from).")
    model = _snip(base, data, config.sparsity, **snip_kwargs(config, base),
                  loss=SparseCrossEntropy(config.label_smoothing), seed=seed)
    return model, reference
  mask_init = "dense" if config.method == "pruning" else "random"
  model = _surgery.sparsify(base, config.sparsity, seed=seed, mask_init=mask_init,
                            **sparsify_kwargs(config, base))
  return model, reference


def snip_kwargs(config, model):
  """`kr.snip` arguments of a config: `sparsify_kwargs` plus SNIP's own.

  Example:
  >>> from keras_rigl.recipes import configs
  >>> config = configs.get_config("fashion_mnist_lenet300_100").replace(
  ...     method="snip", snip_distribution="global")
  >>> kwargs = snip_kwargs(config, build_model("lenet300_100", (28, 28, 1), 10))
  >>> kwargs["distribution"], kwargs["batches"]
  ('global', 1)
  """
  kwargs = sparsify_kwargs(config, model)
  kwargs["distribution"] = config.snip_distribution or config.distribution
  kwargs["batches"] = config.snip_batches or 1
  return kwargs


def make_scheduler(config, plan, data=None, seed=0):
  """The mask callback of the method (None for dense, small_dense, static, snip).

  snfs: `SNFSScheduler` with `prune_rate`, `snfs_momentum`, the config's
  update frequency, drop-fraction schedule (as the prune-rate schedule) and
  window; rigl passes `redistribution` through.

  `plan` is the run's `Plan` (its begin/end steps); `data` the batches RigL
  takes its gradients from (needed for "rigl" only).

  Example:
  >>> from keras_rigl.recipes import configs, plan as plan_lib
  >>> import keras_rigl as kr
  >>> config = configs.get_config("fashion_mnist_lenet300_100").replace(method="set")
  >>> run_plan = plan_lib.make_plan(config, kr.data.dataset_info("fashion_mnist"))
  >>> type(make_scheduler(config, run_plan)).__name__
  'SETScheduler'
  """
  end_step = max(plan.end_step, plan.begin_step)
  if config.method == "rigl":
    return _methods.RigLScheduler(
        data, update_freq=config.update_freq, drop_fraction=config.drop_fraction,
        drop_fraction_schedule=config.drop_fraction_schedule,
        begin_step=plan.begin_step, end_step=end_step, grow_init=config.grow_init,
        seed=seed, redistribution=None if config.redistribution in (None, "none")
        else config.redistribution, min_fan_in=config.min_fan_in)
  if config.method == "snfs":
    return _methods.SNFSScheduler(
        update_freq=config.update_freq, prune_rate=config.prune_rate,
        prune_rate_schedule=config.drop_fraction_schedule,
        momentum=config.snfs_momentum, redistribution=config.redistribution != "none",
        begin_step=plan.begin_step, end_step=end_step, seed=seed)
  if config.method == "set":
    return _methods.SETScheduler(
        update_freq=config.update_freq, drop_fraction=config.drop_fraction,
        drop_fraction_schedule=config.drop_fraction_schedule,
        begin_step=plan.begin_step, end_step=end_step, grow_init=config.grow_init,
        seed=seed, min_fan_in=config.min_fan_in)
  if config.method == "pruning":
    return _methods.MagnitudePruningScheduler(
        0.0, None, plan.pruning_begin_step,
        max(plan.pruning_end_step, plan.pruning_begin_step), plan.pruning_freq)
  return None
