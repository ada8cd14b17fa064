"""Training FLOPs of a whole run (`training_flops`), with the formulas of the
paper's Appendix H; each method is charged by its FLOPs kind in the method
registry.
"""

import math

import numpy as np

from keras_rigl.flops.inference import count_flops
from keras_rigl.flops.records import FlopsCount


def _pruning_sparsity_sum(steps, begin, end, frequency, initial, final):
  """Sum over steps of the Zhu & Gupta sparsity s(t), 0 before `begin`."""
  if steps <= begin:
    return 0.0
  span = max(end - begin, 0)
  ramp_updates = int(math.ceil(span / frequency)) if span else 0
  update_steps = begin + frequency * np.arange(ramp_updates, dtype=np.float64)
  update_steps = update_steps[update_steps < steps]
  held = np.minimum(frequency, steps - update_steps)
  progress = (update_steps - begin) / span if span else np.ones_like(update_steps)
  values = final + (initial - final) * (1.0 - progress) ** 3
  total = float(np.sum(values * held))
  done = begin + frequency * ramp_updates  # First update at the final sparsity.
  if steps > done:
    total += final * (steps - done)
  return total


def _flops_kind(method):
  """The FLOPs kind of a method name (or a kind given as it is)."""
  # Imported here: the method registry sits above the FLOPs accounting.
  from keras_rigl.methods import registry  # pylint: disable=g-import-not-at-top
  if isinstance(method, str) and method in registry.FLOPS_KINDS:
    return method
  return registry.get(method).flops


def training_flops(model_or_flops, method, steps, batch_size, update_freq=100,
                   end_step=None, pruning_begin_step=0, pruning_end_step=None,
                   pruning_frequency=1, initial_sparsity=0.0,
                   final_sparsity=None, sparsities=None):
  """Total training FLOPs of a run, with the formulas of the paper's App. H.

  A method is charged by its FLOPs kind in the method registry
  (`keras_rigl.methods.registry`; a kind may also be given directly). Per
  example and step (``f_D``/``f_S``: dense/sparse inference FLOPs):

  * ``dense`` (dense, small_dense): ``3 f_D``; ``sparse`` (static, set,
    snip): ``3 f_S`` (mask updates and SNIP's one saliency pass are
    negligible and not counted).
  * ``dense_gradient_every_step`` (snfs): ``2 f_S + f_D`` (dense weight
    gradients every step).
  * ``dense_gradient_every_update`` (rigl): ``(3 f_S dT + 2 f_S + f_D) /
    (dT + 1)`` with ``dT = update_freq`` (a dense gradient once per update).
  * ``pruning`` (pruning): ``3 f(t)``; the model (or count) describes the *final*
    network and each sparse layer's sparsity follows the Zhu & Gupta cubic
    schedule ``s_f + (s_i - s_f) (1 - p)^3`` from `pruning_begin_step` to
    `pruning_end_step`, updated every `pruning_frequency` steps; the model is
    dense before the schedule starts.

  Args:
    model_or_flops: a model (counted with `count_flops`) or a `FlopsCount`.
    method: a registered method name ("dense", "small_dense", "static",
      "set", "snip", "rigl", "snfs", "pruning" or one of your own) or a FLOPs
      kind (`keras_rigl.methods.registry.FLOPS_KINDS`).
    steps: number of training steps.
    batch_size: examples per step (global batch).
    update_freq: RigL's mask update interval dT.
    end_step: for "rigl"/"snfs", the step after which masks stop changing and
      no dense gradients are computed (None: the whole run, as in the paper).
    pruning_begin_step: step at which pruning starts.
    pruning_end_step: step at which the final sparsity is reached (default:
      `steps`).
    pruning_frequency: steps between two pruning updates.
    initial_sparsity: sparsity the schedule starts from at
      `pruning_begin_step`.
    final_sparsity: sparsity the schedule ends at; only its ratio to
      `initial_sparsity` matters (default: the final model's sparsity).
    sparsities: passed to `count_flops` when a model is given.

  Returns:
    Total training FLOPs of the run (a float).

  Example:
  >>> from keras_rigl import models
  >>> model = models.lenet300_100()
  >>> training_flops(model, "dense", steps=10, batch_size=100)
  1598430000.0
  >>> count = count_flops(model, sparsities={"fc1": 0.9, "fc2": 0.9})
  >>> training_flops(count, "rigl", 10, 100) < training_flops(count, "snfs", 10, 100)
  True
  """
  kind = _flops_kind(method)
  if int(steps) != steps or steps < 0:
    raise ValueError(f"steps must be a non-negative integer, got {steps!r}.")
  if int(batch_size) != batch_size or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
  if int(update_freq) != update_freq or update_freq < 1:
    raise ValueError(f"update_freq must be a positive integer, got {update_freq!r}.")
  steps, batch_size, update_freq = int(steps), int(batch_size), int(update_freq)
  if isinstance(model_or_flops, FlopsCount):
    if sparsities is not None:
      raise ValueError("sparsities only applies when a model is given; pass them "
                       "to count_flops instead.")
    result = model_or_flops
  else:
    result = count_flops(model_or_flops, sparsities=sparsities)
  f_dense, f_sparse = result.dense, result.sparse

  if kind == "dense":
    per_example = 3 * f_dense * steps
  elif kind == "sparse":
    per_example = 3 * f_sparse * steps
  elif kind in ("dense_gradient_every_update", "dense_gradient_every_step"):
    if kind == "dense_gradient_every_update":
      dynamic = (3 * f_sparse * update_freq + 2 * f_sparse + f_dense) / (update_freq + 1)
    else:
      dynamic = 2 * f_sparse + f_dense
    dynamic_steps = steps if end_step is None else min(steps, max(0, int(end_step)))
    per_example = dynamic * dynamic_steps + 3 * f_sparse * (steps - dynamic_steps)
  else:  # pruning
    begin = int(pruning_begin_step)
    end = steps if pruning_end_step is None else int(pruning_end_step)
    if begin < 0 or end < begin:
      raise ValueError(f"Need 0 <= pruning_begin_step <= pruning_end_step, got "
                       f"{pruning_begin_step!r} and {pruning_end_step!r}.")
    if int(pruning_frequency) != pruning_frequency or pruning_frequency < 1:
      raise ValueError(f"pruning_frequency must be a positive integer, got "
                       f"{pruning_frequency!r}.")
    if final_sparsity is None:
      sparse_rows = [r for r in result.layers if r.density < 1.0]
      params = sum(r.params for r in sparse_rows)
      final_sparsity = 1.0 - sum(r.params * r.density for r in sparse_rows) / params \
          if params else 0.0
    if not 0.0 <= initial_sparsity <= 1.0 or not 0.0 <= final_sparsity <= 1.0:
      raise ValueError("initial_sparsity and final_sparsity must be in [0, 1].")
    if final_sparsity == 0.0:
      per_example = 3 * f_dense * steps
    else:
      # FLOPs are linear in each layer's density, so f(t) = f_D - (f_D - f_S)
      # * s(t) / s_final: only the sum of s(t) over the run is needed.
      total = _pruning_sparsity_sum(steps, begin, end, int(pruning_frequency),
                                    float(initial_sparsity), float(final_sparsity))
      per_example = 3 * (f_dense * steps - (f_dense - f_sparse) * total / final_sparsity)
  return float(per_example * batch_size)
