"""The method registry: every training method by name, in one place.

A `Method` says what the rest of the library needs to know about a method:
its mask callback class (None when masks never move), how
`keras_rigl.training_flops` charges it, how the recipes build the model it
trains, which recipe options only it accepts, and how a recipe config becomes
its callback's arguments. The recipes (`keras_rigl.recipes`), the FLOPs
accounting, the report and `examples/train.py` look methods up here; no other
module compares a method name.

A new method is a scheduler class (usually a `DropGrowScheduler` subclass
with a `_grow_scores`) plus one `register` call:

>>> import tensorflow as tf
>>> from keras_rigl.methods.drop_grow import DropGrowScheduler
>>> class NoisyGrowth(DropGrowScheduler):
...   def _grow_scores(self, step, source):
...     return [tf.random.stateless_uniform(t.weight.shape, seed=[t.key, step])
...             for t in self._targets]
>>> method = register(Method(
...     "noisy", NoisyGrowth, flops="sparse", summary="random growth (an example)",
...     arguments=lambda config, plan, data, seed: dict(
...         update_freq=config.update_freq, drop_fraction=config.drop_fraction,
...         begin_step=plan.begin_step, end_step=max(plan.end_step, plan.begin_step),
...         seed=seed)))
>>> get("noisy").moves_masks, "noisy" in names()
(True, True)
>>> unregister("noisy")
"""

import dataclasses
from typing import Any, Callable, Optional, Tuple

# How `keras_rigl.training_flops` charges a method, per example and step
# (f_D / f_S: dense / sparse inference FLOPs): see that function.
FLOPS_KINDS = (
    "dense",                        # 3 f_D
    "sparse",                       # 3 f_S (mask updates not counted)
    "dense_gradient_every_update",  # RigL: a dense gradient every update_freq steps
    "dense_gradient_every_step",    # SNFS: 2 f_S + f_D while masks move
    "pruning",                      # dense to sparse on the pruning schedule
)
# How the recipes build the model a method trains.
MODEL_KINDS = ("dense", "small_dense", "sparse", "snip")
# The recipe windows that time mask updates.
WINDOWS = (None, "update", "pruning")


@dataclasses.dataclass(frozen=True)
class Method:
  """One training method as the library and the recipes see it.

  Args:
    name: the name configs and ``--method`` use.
    scheduler: the mask callback class, or None (masks never move).
    flops: one of `FLOPS_KINDS`.
    summary: one line for ``--help``.
    arguments: ``(config, plan, data, seed) -> dict`` of `scheduler`
      keyword arguments from a recipe config, its `Plan`, the gradient batches
      (RigL's) and the run's seed. None: ``scheduler()`` with no arguments.
    model: one of `MODEL_KINDS`.
    mask_init: "random" or "dense" (start dense, as pruning does).
    window: "update" (begin_step..end_step every update_freq), "pruning"
      (pruning_begin_step..pruning_end_step every pruning_freq) or None.
    options: recipe config fields that only this method (among others) uses
      (e.g. "min_fan_in", "redistribution"); a config that sets one of them
      for a method without it is refused.
    check: optional ``config -> None`` that raises ValueError for a recipe
      config this method cannot run (its own rules, checked with the config).
    in_train_step: optional ``config -> bool``: True when, for that config,
      the scheduler updates masks inside the compiled train step (then
      ``steps_per_execution`` need not divide the update frequency).

  Example:
  >>> get("rigl").flops, get("static").moves_masks
  ('dense_gradient_every_update', False)
  """

  name: str
  scheduler: Optional[type] = None
  flops: str = "sparse"
  summary: str = ""
  arguments: Optional[Callable[..., dict]] = None
  model: str = "sparse"
  mask_init: str = "random"
  window: Optional[str] = "update"
  options: Tuple[str, ...] = ()
  check: Optional[Callable[[Any], None]] = None
  in_train_step: Optional[Callable[[Any], bool]] = None

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name.isidentifier():
      raise ValueError(f"Method name must be a Python identifier such as 'my_rigl', "
                       f"got {self.name!r}.")
    for field, value, choices in (("flops", self.flops, FLOPS_KINDS),
                                  ("model", self.model, MODEL_KINDS),
                                  ("mask_init", self.mask_init, ("random", "dense")),
                                  ("window", self.window, WINDOWS)):
      if value not in choices:
        raise ValueError(f"Method {self.name!r}: {field} must be one of {choices}, "
                         f"got {value!r}.")
    if self.scheduler is None and self.window is not None:
      object.__setattr__(self, "window", None)  # Nothing to time.

  @property
  def moves_masks(self):
    """True when a callback changes the masks during training."""
    return self.scheduler is not None

  def updates_in_train_step(self, config):
    """True when this method's mask updates run inside the train step.

    >>> from keras_rigl.recipes import configs
    >>> config = configs.get_config("fashion_mnist_lenet300_100")
    >>> get("rigl").updates_in_train_step(config), get("set").updates_in_train_step(config)
    (True, False)
    """
    return self.in_train_step is not None and bool(self.in_train_step(config))

  def check_config(self, config):
    """Raises ValueError if this method cannot run recipe `config`."""
    if self.check is not None:
      self.check(config)

  def make_scheduler(self, config, plan, data=None, seed=0):
    """The method's callback for a recipe run, or None.

    >>> from keras_rigl.recipes import configs, plan as plan_lib
    >>> import keras_rigl as kr
    >>> config = configs.get_config("fashion_mnist_lenet300_100")
    >>> run_plan = plan_lib.make_plan(config, kr.data.dataset_info("fashion_mnist"))
    >>> type(get("set").make_scheduler(config, run_plan)).__name__
    'SETScheduler'
    """
    if self.scheduler is None:
      return None
    kwargs = self.arguments(config, plan, data, seed) if self.arguments else {}
    return self.scheduler(**kwargs)


_METHODS = {}


def register(method, replace=False):
  """Adds `method` (a `Method`) to the registry; returns it.

  Raises ValueError if the name is taken, unless ``replace=True``.

  >>> register(Method("dense", flops="dense", model="dense"))
  Traceback (most recent call last):
  ...
  ValueError: A method named 'dense' is already registered; pick another name or pass replace=True.
  """
  if not isinstance(method, Method):
    raise TypeError(f"register takes a keras_rigl.methods.Method, got "
                    f"{type(method).__name__}; e.g. register(Method('mine', MyScheduler)).")
  if method.name in _METHODS and not replace:
    raise ValueError(f"A method named {method.name!r} is already registered; pick another "
                     "name or pass replace=True.")
  _METHODS[method.name] = method
  return method


def unregister(name):
  """Removes the method `name` (no error if it is not registered).

  >>> unregister("not_a_method")
  """
  _METHODS.pop(name, None)


def get(name):
  """The `Method` registered as `name`; ValueError naming the known ones.

  >>> get("snfs").scheduler.__name__
  'SNFSScheduler'
  """
  try:
    return _METHODS[name]
  except (KeyError, TypeError):
    raise ValueError(f"Unknown method {name!r}; use one of {names()}.") from None


def names():
  """The registered method names, in registration order (a tuple).

  >>> names()[:3]
  ('dense', 'small_dense', 'static')
  """
  return tuple(_METHODS)


def accepting(option):
  """Names of the methods that accept the recipe option `option`, sorted.

  >>> accepting("min_fan_in")
  ('rigl', 'set')
  """
  return tuple(sorted(m.name for m in _METHODS.values() if option in m.options))


def find(**fields: Any):
  """The methods whose attributes equal `fields`, in registration order.

  >>> [m.name for m in find(window="pruning")]
  ['pruning']
  """
  return [m for m in _METHODS.values()
          if all(getattr(m, key) == value for key, value in fields.items())]
