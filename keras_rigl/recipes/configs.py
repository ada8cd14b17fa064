"""Named training setups: the authors' ImageNet / CIFAR-10 runs and our default.

A `Config` holds every hyperparameter of a run; `get_config(NAME)` returns
one (`examples/train.py --config NAME` starts from it and explicit flags
override single values; in your own script, `config.replace(...)` does). The values
follow the RigL code (github.com/google-research/rigl:
``imagenet_resnet/imagenet_train_eval.py``, ``cifar_resnet/resnet_train_eval.py``)
and the paper (Evci et al., ICML 2020, Section 4 and Appendix). docs/train.md
explains every field.

Example:
>>> import keras_rigl as kr
>>> config = kr.recipes.get_config("imagenet_resnet50")
>>> config.batch_size, config.train_steps, config.peak_learning_rate()
(4096, 32000, 1.6)
"""

import dataclasses
import math
import numbers
from typing import Optional, Tuple

from keras_rigl.methods import registry as _registry
from keras_rigl.methods.timing import parse_drop_fraction_schedule

MODELS = ("lenet300_100", "lenet5", "wide_resnet_22_2", "resnet50",
          "mobilenet_v1", "mobilenet_v2")
DATASETS = ("fashion_mnist", "cifar10", "imagenet2012")
# The methods registered when the recipes load (`keras_rigl.methods.registry`;
# a config checks against the registry itself, so methods registered later count).
METHODS = _registry.names()
DISTRIBUTIONS = ("erk", "uniform", "er")
LR_UNITS = ("epochs", "steps", "fraction")
LR_SCHEDULES = ("step", "cosine")
# Where RigL's grow scores come from: "step" (the train step's own gradient,
# the update inside the compiled step) or "data" (a separate pass over training
# batches, host-scheduled; rigl_tf2's behaviour).
GROW_SCORES = ("step", "data")
# Layer-wise redistribution (rigl: default "none"; snfs: default "momentum").
REDISTRIBUTIONS = ("none", "momentum", "gradient")
# SNIP's layer-wise counts: "global" ranks every layer together (Lee et al.).
SNIP_DISTRIBUTIONS = ("global",) + DISTRIBUTIONS


@dataclasses.dataclass(frozen=True)
class Config:
  """Every hyperparameter of one training run (see docs/train.md).

  Step-valued fields (`train_steps`, `end_step`, `pruning_*_step`) count
  optimizer steps at `batch_size`; `lr_warmup` and `lr_boundaries` are in
  `lr_unit`. `--training_steps_multiplier` scales all of them except
  fractions, which follow the run's length by themselves.
  """
  model: str
  dataset: str
  method: str = "rigl"
  sparsity: float = 0.9
  distribution: str = "erk"
  erk_power_scale: float = 1.0
  # Length of the run: exactly one of train_steps / epochs.
  batch_size: int = 128
  train_steps: Optional[int] = None
  epochs: Optional[float] = None
  eval_batch_size: Optional[int] = None  # None: batch_size.
  eval_every: int = 1  # Epochs between evaluations during training.
  # SGD with momentum, learning rate scaled linearly with the batch size.
  learning_rate: float = 0.1  # For `lr_batch_size` examples per step.
  lr_batch_size: int = 256
  momentum: float = 0.9
  nesterov: bool = True
  lr_unit: str = "epochs"
  lr_warmup: float = 0.0  # Linear warm-up from 0, in lr_unit.
  lr_boundaries: Tuple[float, ...] = ()  # In lr_unit.
  lr_decay: float = 0.1  # Factor applied at every boundary.
  # "step": lr_boundaries / lr_decay; "cosine": to 0 at the end of the run.
  lr_schedule: str = "step"
  # Loss.
  weight_decay: float = 0.0  # Adds weight_decay/2 * sum(w^2) per kernel.
  decay_depthwise: bool = True  # False: no weight decay on depthwise kernels.
  label_smoothing: float = 0.0
  # Which layers stay dense.
  dense_layers: Tuple[str, ...] = ()  # Never sparsified (out of ERK scaling).
  dense_depthwise: bool = False  # Keep every DepthwiseConv2D dense.
  uniform_dense_layers: Tuple[str, ...] = ()  # Dense with "uniform" only.
  # Mask updates (SET / RigL).
  update_freq: int = 100
  drop_fraction: float = 0.3
  drop_fraction_schedule: str = "cosine"
  begin_step: int = 0
  end_step: Optional[int] = None  # None: end_fraction of the run.
  end_fraction: float = 0.75
  grow_init: str = "zeros"
  # Layer-wise redistribution of the regrown count: None is the method's own
  # default ("none" for rigl, "momentum" for snfs).
  redistribution: Optional[str] = None
  # RigL's grow scores (GROW_SCORES); None: "step", or "data" with
  # redistribution (which needs the separate pass).
  grow_scores: Optional[str] = None
  # Sparse momentum (snfs): initial prune rate (decays with
  # drop_fraction_schedule) and the EMA coefficient of the dense gradient.
  prune_rate: float = 0.5
  snfs_momentum: float = 0.9
  # Gradual magnitude pruning (Zhu & Gupta) baseline.
  pruning_begin_step: Optional[int] = None  # None: pruning_begin_fraction.
  pruning_end_step: Optional[int] = None  # None: pruning_end_fraction.
  pruning_begin_fraction: float = 0.2
  pruning_end_fraction: float = 0.75
  pruning_freq: Optional[int] = None  # None: update_freq.
  # RigL / SET: fewest active inputs every output unit keeps (0: no minimum).
  min_fan_in: int = 0
  # SNIP: batches of the sensitivity; distribution (None: `distribution`).
  snip_batches: Optional[int] = None  # None: 1.
  snip_distribution: Optional[str] = None

  def replace(self, **changes):
    """A copy with `changes` applied and checked (`dataclasses.replace` + `check`).

    Example:
    >>> get_config("imagenet_resnet50").replace(sparsity=0.8).sparsity
    0.8
    """
    return dataclasses.replace(self, **changes).check()

  def peak_learning_rate(self, batch_size=None):
    """The learning rate after warm-up at `batch_size` (default: the config's)."""
    batch_size = batch_size or self.batch_size
    return round(self.learning_rate * batch_size / self.lr_batch_size, 10)

  def check(self):
    """Raises ValueError if a value is out of range; returns self."""
    def need(condition, message):
      if not condition:
        raise ValueError(message)
    self._check_types()
    need(self.model in MODELS, f"Unknown model {self.model!r}; use one of {MODELS}.")
    need(self.dataset in DATASETS,
         f"Unknown dataset {self.dataset!r}; use one of {DATASETS}.")
    need(self.method in _registry.names(),
         f"Unknown method {self.method!r}; use one of {_registry.names()}.")
    method = _registry.get(self.method)
    need(self.distribution in DISTRIBUTIONS,
         f"Unknown distribution {self.distribution!r}; use one of {DISTRIBUTIONS}.")
    need(0.0 <= self.sparsity < 1.0, f"sparsity must be in [0, 1), got {self.sparsity}.")
    need((self.train_steps is None) != (self.epochs is None),
         "Give exactly one of train_steps and epochs.")
    need(self.train_steps is None or self.train_steps >= 1,
         f"train_steps must be >= 1, got {self.train_steps}.")
    need(self.epochs is None or self.epochs > 0, f"epochs must be > 0, got {self.epochs}.")
    need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}.")
    need(self.lr_unit in LR_UNITS, f"lr_unit must be one of {LR_UNITS}, got {self.lr_unit!r}.")
    need(self.lr_schedule in LR_SCHEDULES,
         f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}.")
    need(list(self.lr_boundaries) == sorted(self.lr_boundaries),
         f"lr_boundaries must be increasing, got {self.lr_boundaries}.")
    need(self.update_freq >= 1, f"update_freq must be >= 1, got {self.update_freq}.")
    need(0.0 <= self.drop_fraction <= 1.0,
         f"drop_fraction must be in [0, 1], got {self.drop_fraction}.")
    need(self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}.")
    need(self.eval_batch_size is None or self.eval_batch_size >= 1,
         f"eval_batch_size must be >= 1, got {self.eval_batch_size}.")
    need(0 < self.learning_rate < math.inf,
         f"learning_rate must be > 0 (and finite), got {self.learning_rate}; e.g. 0.1.")
    need(self.lr_batch_size >= 1, f"lr_batch_size must be >= 1, got {self.lr_batch_size}.")
    need(self.weight_decay >= 0,
         f"weight_decay must be >= 0, got {self.weight_decay}; use 0 for none.")
    need(0.0 <= self.label_smoothing < 1.0,
         f"label_smoothing must be in [0, 1), got {self.label_smoothing}.")
    need(self.erk_power_scale >= 0,
         f"erk_power_scale must be >= 0, got {self.erk_power_scale}.")
    for name in ("begin_step", "end_step", "pruning_begin_step", "pruning_end_step"):
      value = getattr(self, name)
      need(value is None or value >= 0, f"{name} must be >= 0, got {value}.")
    need(self.pruning_freq is None or self.pruning_freq >= 1,
         f"pruning_freq must be >= 1, got {self.pruning_freq}.")
    parse_drop_fraction_schedule(self.drop_fraction_schedule)  # ValueError if bad.
    self._check_snfs(method)
    need(_is_int(self.min_fan_in) and self.min_fan_in >= 0,
         f"min_fan_in must be an integer >= 0 (0: no minimum), got {self.min_fan_in!r}; "
         "e.g. --min_fan_in=1.")
    need(self.min_fan_in == 0 or "min_fan_in" in method.options,
         f"--min_fan_in={self.min_fan_in} only applies to --method="
         f"{' or '.join(_registry.accepting('min_fan_in'))} (it "
         f"keeps units connected through mask updates), not --method={self.method}; "
         "drop --min_fan_in or use --method=rigl.")
    need(self.snip_batches is None or (_is_int(self.snip_batches) and self.snip_batches >= 1),
         f"snip_batches must be an integer >= 1, got {self.snip_batches!r}; e.g. "
         "--snip_batches=1.")
    need(self.snip_distribution is None or self.snip_distribution in SNIP_DISTRIBUTIONS,
         f"Unknown snip_distribution {self.snip_distribution!r}; use one of "
         f"{SNIP_DISTRIBUTIONS}.")
    need(self.grow_scores is None or self.grow_scores in GROW_SCORES,
         f"Unknown grow_scores {self.grow_scores!r}; use one of {GROW_SCORES} (step: "
         "the train step's own gradient; data: a separate pass over training batches).")
    need(self.grow_scores is None or "grow_scores" in method.options,
         f"--grow_scores only applies to --method="
         f"{' or '.join(_registry.accepting('grow_scores'))}, not --method={self.method}; "
         "drop --grow_scores.")
    need(not (self.grow_scores == "step" and self.redistribution not in (None, "none")),
         f"--redistribution={self.redistribution} needs --grow_scores=data (the separate "
         "gradient pass); the update inside the train step keeps layer counts fixed.")
    for name in ("snip_batches", "snip_distribution"):
      need(getattr(self, name) is None or name in method.options,
           f"--{name} only applies to --method={' or '.join(_registry.accepting(name))}, "
           f"not --method={self.method}; drop --{name} or use "
           f"--method={_registry.accepting(name)[0]}.")
    return self

  def _check_types(self):
    """Numbers where numbers belong, before any comparison (a clear TypeError)."""
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      kind = _FIELD_KINDS.get(field.type)
      if kind is None or (value is None and "Optional" in str(field.type)):
        continue
      name, types = kind
      if isinstance(value, bool) or not isinstance(value, types):
        raise TypeError(f"Config {field.name} must be {name}, got {value!r} "
                        f"({type(value).__name__}); e.g. --{field.name}="
                        f"{field.default if field.default is not None else 1}.")
    sparse = (self.method in _registry.names() and
              _registry.get(self.method).model in ("sparse", "snip"))
    if sparse and isinstance(self.sparsity, numbers.Real) and self.sparsity == 0:
      raise ValueError(f"--method={self.method} needs --sparsity > 0 (at 0 no layer is "
                       "sparse); e.g. --sparsity=0.9, or --method=dense.")

  def _check_snfs(self, method):
    """--method=snfs and --redistribution values and combinations."""
    redistribution = self.redistribution
    if redistribution is not None and redistribution not in REDISTRIBUTIONS:
      raise ValueError(f"--redistribution={redistribution!r} is unknown; use one of "
                       f"{REDISTRIBUTIONS}.")
    if redistribution is not None and "redistribution" not in method.options:
      which = " or ".join(f"--method={n}" for n in _registry.accepting("redistribution"))
      raise ValueError(f"--redistribution applies to {which}, not "
                       f"--method={self.method}; drop --redistribution or change --method.")
    if redistribution not in (None, "none") and self.min_fan_in:
      raise ValueError(f"--redistribution={redistribution} cannot be combined with "
                       f"--min_fan_in={self.min_fan_in} yet; drop one of them.")
    method.check_config(self)  # The method's own rules (snfs: no 'gradient').
    if not 0.0 <= self.prune_rate <= 1.0:
      raise ValueError(f"--prune_rate must be in [0, 1], got {self.prune_rate}; e.g. 0.5 "
                       "(SNFS's default).")
    if not 0.0 <= self.snfs_momentum < 1.0:
      raise ValueError(f"--snfs_momentum must be in [0, 1), got {self.snfs_momentum}; e.g. "
                       "0.9 (SNFS's default).")


_INT = ("an integer", numbers.Integral)
_REAL = ("a number", numbers.Real)
_FIELD_KINDS = {int: _INT, float: _REAL, Optional[int]: _INT, Optional[float]: _REAL}


def _is_int(value):
  return isinstance(value, int) and not isinstance(value, bool)


def _imagenet(model, warmup, boundaries, **kwargs):
  """The authors' ImageNet recipe (imagenet_train_eval.py + the paper)."""
  values = dict(
      model=model, dataset="imagenet2012", batch_size=4096, train_steps=32000,
      learning_rate=0.1, lr_batch_size=256, momentum=0.9, nesterov=True,
      lr_unit="epochs", lr_warmup=warmup, lr_boundaries=boundaries, lr_decay=0.1,
      weight_decay=1e-4, label_smoothing=0.1, update_freq=100, drop_fraction=0.3,
      drop_fraction_schedule="cosine", end_step=25000,
      # Gradual pruning window in the spirit of Gale et al. (2019), scaled to
      # 32k steps: prune from step 10k to 25k, every 500 steps.
      pruning_begin_step=10000, pruning_end_step=25000, pruning_freq=500)
  values.update(kwargs)
  return Config(**values)


CONFIGS = {
    # ResNet-50 v1.5, ~102 epochs at batch 4096. Uniform keeps the first conv
    # dense; ERK sparsifies every layer (the paper's Table 1 setting).
    "imagenet_resnet50": _imagenet(
        "resnet50", warmup=5, boundaries=(30, 70, 90),
        uniform_dense_layers=("conv1",)),
    # MobileNets: first conv and depthwise convs dense (and the depthwise
    # kernels without weight decay); pointwise convs and logits sparse.
    "imagenet_mobilenet_v1": _imagenet(
        "mobilenet_v1", warmup=8, boundaries=(40, 75, 95),
        dense_layers=("conv1",), dense_depthwise=True, decay_depthwise=False),
    "imagenet_mobilenet_v2": _imagenet(
        "mobilenet_v2", warmup=8, boundaries=(40, 75, 95),
        dense_layers=("conv1",), dense_depthwise=True, decay_depthwise=False),
    # WRN-22-2, 250 epochs (97,656 steps) at batch 128 (resnet_train_eval.py):
    # lr 0.1 x0.2 every 30k steps, L2 5e-4, first conv dense.
    "cifar10_wrn_22_2": Config(
        model="wide_resnet_22_2", dataset="cifar10", batch_size=128,
        train_steps=97656, learning_rate=0.1, lr_batch_size=128, momentum=0.9,
        nesterov=True, lr_unit="steps", lr_boundaries=(30000, 60000, 90000),
        lr_decay=0.2, weight_decay=5e-4, dense_layers=("conv1",),
        update_freq=100, drop_fraction=0.3, drop_fraction_schedule="cosine",
        end_step=75000, pruning_begin_step=20000, pruning_end_step=75000,
        pruning_freq=1000),
    # The default: a few minutes on a laptop CPU. Schedules are fractions of
    # the run so that --epochs keeps them meaningful.
    "fashion_mnist_lenet300_100": Config(
        model="lenet300_100", dataset="fashion_mnist", batch_size=128,
        epochs=10, learning_rate=0.1, lr_batch_size=128, momentum=0.9,
        nesterov=True, lr_unit="fraction", lr_boundaries=(0.5, 0.75),
        lr_decay=0.1, weight_decay=0.0, update_freq=100, drop_fraction=0.3,
        drop_fraction_schedule="cosine", end_fraction=0.75,
        pruning_begin_fraction=0.2, pruning_end_fraction=0.75),
    # The MLP recipe of the authors' TF2 trainer (google-research/rigl,
    # rigl_tf2/mlp_configs: 11719 steps = 25 epochs at batch 128, SGD momentum
    # 0.9 at lr 0.2 with cosine decay to 0, L2 1e-4 as Keras l2(1e-4), i.e.
    # 1e-4 * sum(w^2) = our weight_decay 2e-4, mask updates every 500 steps to
    # the end with drop fraction 0.3 following the learning rate, 98% sparsity
    # in every layer; their pruning baseline prunes from step 3000 to 7000 every
    # 100 steps), on Fashion-MNIST.
    "fashion_mnist_mlp_rigl_tf2": Config(
        model="lenet300_100", dataset="fashion_mnist", sparsity=0.98,
        distribution="uniform", batch_size=128, train_steps=11719,
        learning_rate=0.2, lr_batch_size=128, momentum=0.9, nesterov=False,
        lr_schedule="cosine", weight_decay=2e-4, update_freq=500,
        drop_fraction=0.3, drop_fraction_schedule="cosine", end_fraction=1.0,
        pruning_begin_step=3000, pruning_end_step=7000, pruning_freq=100),
}
DEFAULT = "fashion_mnist_lenet300_100"


def get_config(name):
  """The named `Config`; ValueError naming the choices if unknown.

  Example:
  >>> config = get_config("cifar10_wrn_22_2")
  >>> config.model, config.batch_size, config.weight_decay
  ('wide_resnet_22_2', 128, 0.0005)
  """
  if name not in CONFIGS:
    raise ValueError(f"Unknown config {name!r}; use one of {sorted(CONFIGS)}.")
  return CONFIGS[name]


get = get_config  # The short name examples/train.py has always used.


def for_model(model=None, dataset=None):
  """The named config for (model, dataset) when no --config is given.

  An exact (model, dataset) match first, then the first config of `dataset`
  (its recipe applied to another model), then the default.

  Example:
  >>> for_model("resnet50", "imagenet2012")
  'imagenet_resnet50'
  >>> for_model("lenet5", "fashion_mnist")
  'fashion_mnist_lenet300_100'
  """
  default = CONFIGS[DEFAULT]
  model = model or default.model
  dataset = dataset or default.dataset
  for name, config in CONFIGS.items():
    if (config.model, config.dataset) == (model, dataset):
      return name
  for name, config in CONFIGS.items():
    if config.dataset == dataset:
      return name
  return DEFAULT
