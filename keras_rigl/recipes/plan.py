"""A `Config` turned into the step counts of one run.

Example:
>>> import keras_rigl as kr
>>> from keras_rigl.recipes import configs
>>> from keras_rigl.recipes.plan import make_plan
>>> plan = make_plan(configs.get_config("imagenet_resnet50"),
...                  kr.data.dataset_info("imagenet2012"))
>>> plan.train_steps, plan.warmup_steps, plan.lr_boundaries, plan.end_step
(32000, 1564, (9384, 21895, 28151), 25000)
"""

import dataclasses
import math
from typing import Tuple


@dataclasses.dataclass(frozen=True)
class Plan:
  """A config turned into steps for one run (after batch size and multiplier)."""
  train_steps: int
  steps_per_epoch: int  # Steps of one Keras epoch.
  epochs: int  # Keras epochs (the last one may stop early).
  peak_learning_rate: float
  warmup_steps: int
  lr_boundaries: Tuple[int, ...]
  lr_multipliers: Tuple[float, ...]
  begin_step: int
  end_step: int
  pruning_begin_step: int
  pruning_end_step: int
  pruning_freq: int


def make_plan(config, info, steps_per_epoch=None, multiplier=1.0):
  """Every step count of the run, from a `Config` and the dataset's size.

  Epoch-valued quantities use ``num_train / batch_size`` steps per epoch (as
  the authors' ``current_epoch``); `multiplier` scales the run length and
  every step- or epoch-valued schedule (fractions follow the length).

  Example:
  >>> import keras_rigl as kr
  >>> from keras_rigl.recipes import configs
  >>> info = kr.data.dataset_info("imagenet2012")
  >>> plan = make_plan(configs.get_config("imagenet_resnet50"), info)
  >>> plan.train_steps, plan.warmup_steps, plan.lr_boundaries, plan.end_step
  (32000, 1564, (9384, 21895, 28151), 25000)
  """
  from keras_rigl.recipes.configs import Config  # pylint: disable=g-import-not-at-top
  from keras_rigl.data.common import DatasetInfo  # pylint: disable=g-import-not-at-top
  if not isinstance(config, Config):
    raise TypeError(f"make_plan needs a recipes Config, got {type(config).__name__}; e.g. "
                    "make_plan(recipes.get_config('fashion_mnist_lenet300_100'), "
                    "kr.data.dataset_info('fashion_mnist')).")
  if not isinstance(info, DatasetInfo):
    raise TypeError(f"make_plan needs the dataset's DatasetInfo, got "
                    f"{type(info).__name__}; e.g. kr.data.dataset_info('fashion_mnist').")
  data_epoch = info.num_train / config.batch_size  # Steps per pass, fractional.
  if config.train_steps is not None:
    steps = config.train_steps * multiplier
  else:
    steps = config.epochs * max(1, info.num_train // config.batch_size) * multiplier
  steps = max(1, int(round(steps)))
  spe = min(steps_per_epoch or max(1, info.num_train // config.batch_size), steps)
  scale = {"epochs": data_epoch * multiplier, "steps": multiplier,
           "fraction": steps}[config.lr_unit]
  boundaries = tuple(int(round(b * scale)) for b in config.lr_boundaries)
  multipliers = tuple(round(config.lr_decay ** (i + 1), 12) for i in range(len(boundaries)))

  def step_or_fraction(step, fraction):
    return int(round(step * multiplier)) if step is not None else int(round(fraction * steps))

  # Pruning happens at multiples of its frequency: put the window's ends on
  # such steps, or the last pruning step would stop short of the target.
  pruning_freq = config.pruning_freq or config.update_freq
  on_grid = lambda step: int(round(step / pruning_freq)) * pruning_freq

  return Plan(
      train_steps=steps, steps_per_epoch=spe, epochs=int(math.ceil(steps / spe)),
      peak_learning_rate=config.peak_learning_rate(),
      warmup_steps=int(round(config.lr_warmup * scale)),
      lr_boundaries=boundaries, lr_multipliers=multipliers,
      begin_step=int(round(config.begin_step * multiplier)),
      end_step=step_or_fraction(config.end_step, config.end_fraction),
      pruning_begin_step=on_grid(step_or_fraction(config.pruning_begin_step,
                                                  config.pruning_begin_fraction)),
      pruning_end_step=on_grid(step_or_fraction(config.pruning_end_step,
                                                config.pruning_end_fraction)),
      pruning_freq=pruning_freq)
