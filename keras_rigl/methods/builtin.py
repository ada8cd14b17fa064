"""The methods keras-rigl ships, registered in `keras_rigl.methods.registry`.

Example:
>>> from keras_rigl.methods import registry
>>> [m.name for m in registry.find(flops="sparse")]
['static', 'set', 'snip']
"""

from keras_rigl.methods.pruning import MagnitudePruningScheduler
from keras_rigl.methods.registry import Method, register
from keras_rigl.methods.rigl import RigLScheduler
from keras_rigl.methods.set import SETScheduler
from keras_rigl.methods.snfs import SNFSScheduler


def _update_window(plan):
  """begin_step / end_step of a recipe plan (an empty window stays empty)."""
  return dict(begin_step=plan.begin_step, end_step=max(plan.end_step, plan.begin_step))


def _drop_grow(config, seed):
  return dict(update_freq=config.update_freq, drop_fraction=config.drop_fraction,
              drop_fraction_schedule=config.drop_fraction_schedule,
              grow_init=config.grow_init, seed=seed, min_fan_in=config.min_fan_in)


def rigl_arguments(config, plan, data, seed):
  """RigLScheduler's arguments; `redistribution` passes through ("none": None).

  `data` goes to the scheduler only with ``grow_scores="data"`` (or with
  redistribution, which needs it); by default the update runs inside the
  train step and grows by the step's own gradient.

  >>> from keras_rigl.recipes import configs, plan as plan_lib
  >>> import keras_rigl as kr
  >>> config = configs.get_config("fashion_mnist_lenet300_100")
  >>> run_plan = plan_lib.make_plan(config, kr.data.dataset_info("fashion_mnist"))
  >>> rigl_arguments(config, run_plan, None, 0)["redistribution"] is None
  True
  """
  redistribution = None if config.redistribution in (None, "none") else config.redistribution
  return dict(data=None if rigl_in_train_step(config) else data,
              **_drop_grow(config, seed), **_update_window(plan),
              redistribution=redistribution)


def rigl_in_train_step(config):
  """RigL grows from the train step's own gradient unless told otherwise.

  ``grow_scores="data"`` (or redistribution, which needs the separate pass)
  selects the host-scheduled update over separate batches.
  """
  redistribution = config.redistribution not in (None, "none")
  return (config.grow_scores or ("data" if redistribution else "step")) == "step"


def set_arguments(config, plan, data, seed):
  """SETScheduler's arguments (no data: growth is random)."""
  del data  # Unused: random growth.
  return dict(**_drop_grow(config, seed), **_update_window(plan))


def snfs_arguments(config, plan, data, seed):
  """SNFSScheduler's: `prune_rate`, `snfs_momentum`, the drop-fraction schedule
  as the prune-rate schedule; ``redistribution="none"`` turns it off."""
  del data  # Unused: the momentum comes from the training steps.
  return dict(update_freq=config.update_freq, prune_rate=config.prune_rate,
              prune_rate_schedule=config.drop_fraction_schedule,
              momentum=config.snfs_momentum, redistribution=config.redistribution != "none",
              seed=seed, **_update_window(plan))


def snfs_check(config):
  """SNFS redistributes by momentum: ``redistribution="gradient"`` is RigL's."""
  if config.redistribution == "gradient":
    raise ValueError("--method=snfs redistributes by momentum: use "
                     "--redistribution=momentum (the default) or none; 'gradient' is "
                     "for --method=rigl.")


def pruning_arguments(config, plan, data, seed):
  """MagnitudePruningScheduler's: from dense to each layer's own target."""
  del config, data, seed  # The plan holds the pruning window.
  return dict(initial_sparsity=0.0, final_sparsity=None,
              begin_step=plan.pruning_begin_step,
              end_step=max(plan.pruning_end_step, plan.pruning_begin_step),
              update_freq=plan.pruning_freq)


for _method in (
    Method("dense", flops="dense", model="dense", summary="the plain model"),
    Method("small_dense", flops="dense", model="small_dense",
           summary="a narrower dense model with the sparse model's number of kernel "
                   "weights"),
    Method("static", summary="fixed random masks"),
    Method("set", SETScheduler, arguments=set_arguments, options=("min_fan_in",),
           summary="dynamic sparse training, random growth (Mocanu et al.)"),
    Method("rigl", RigLScheduler, flops="dense_gradient_every_update",
           arguments=rigl_arguments, in_train_step=rigl_in_train_step,
           options=("min_fan_in", "redistribution", "grow_scores"),
           summary="dynamic sparse training, gradient growth (Evci et al.)"),
    Method("pruning", MagnitudePruningScheduler, flops="pruning", mask_init="dense",
           window="pruning", arguments=pruning_arguments,
           summary="dense-to-sparse gradual magnitude pruning"),
    Method("snfs", SNFSScheduler, flops="dense_gradient_every_step",
           arguments=snfs_arguments, options=("redistribution",), check=snfs_check,
           summary="sparse momentum (Dettmers & Zettlemoyer)"),
    Method("snip", model="snip", options=("snip_batches", "snip_distribution"),
           summary="masks chosen once at initialisation by connection sensitivity "
                   "|g * w| (Lee et al., 2019), then static training"),
):
  register(_method)
