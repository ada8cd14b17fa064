"""The end-of-run report of a training run: numbers, a table, a figure.

`build_report` gathers what a run produced (test accuracy, per-layer
sparsity, FLOPs and size relative to the dense model, the per-epoch history
and the mask updates) into one JSON-friendly dict; `format_report` turns it
into the text printed at the end of training, `save_figure` into a PNG
(per-layer density with the units left without inputs, mask change per
update, accuracy per epoch; needs matplotlib) and `save_json` into ``report.json``.

Example:
>>> import os, tempfile
>>> import keras_rigl as kr
>>> from keras_rigl.recipes import report as report_lib
>>> dense = kr.models.lenet300_100()
>>> sparse = kr.sparsify(dense, 0.9)
>>> report = report_lib.build_report(
...     sparse, dense, method="rigl", steps=4680, batch_size=128,
...     update_freq=100, end_step=3510, test_metrics={"accuracy": 0.88})
>>> round(report["sparsity"]["total"], 3), round(report["flops"]["inference_ratio"], 2)
(0.9, 0.1)
>>> "test accuracy   0.8800" in report_lib.format_report(report)
True
>>> path = report_lib.save_figure(report, os.path.join(tempfile.mkdtemp(), "r.png"))
>>> os.path.getsize(path) > 10000
True
"""

import io
import json
import os

import numpy as np
from keras_rigl.backend import tf

from keras_rigl import flops as _flops
from keras_rigl import surgery as _surgery
from keras_rigl.methods import registry as _registry
from keras_rigl.surgery import SparsityReport, SparsityRow

def build_report(model, reference, *, method, steps, batch_size, update_freq=100,
                 end_step=None, pruning_begin_step=0, pruning_end_step=None,
                 pruning_freq=100, test_metrics=None, history=(), mask_updates=(),
                 initial_flops_ratio=None, **extra):
  """A JSON-friendly dict with everything the report shows.

  Args:
    model: the trained model (SparseWrappers are read through their masks).
    reference: the dense model of the same architecture and full width; FLOPs
      and size are given relative to it.
    method: a registered method name (`keras_rigl.methods.names()`).
    steps: training steps run; batch_size: global batch size.
    update_freq, end_step: RigL's dT and last update step (training FLOPs).
    pruning_begin_step, pruning_end_step, pruning_freq: the pruning window.
    test_metrics: {name: value} from `model.evaluate(..., return_dict=True)`.
    history: per-epoch dicts (epoch, step, accuracy, val_accuracy, ...).
    mask_updates: per-update dicts (step, mask_change, drop_fraction and,
      when layer counts move, flops_ratio: the scheduler's `flops_history`).
    initial_flops_ratio: inference FLOPs ratio of the model before training
      (its masks at step 0). When `mask_updates` carry ``flops_ratio``
      values, the training FLOPs add up each stretch between updates at the
      FLOPs of its masks (``flops["training_from"] == "flops_history"``)
      instead of charging the whole run at the final model's FLOPs.
    **extra: more JSON-friendly entries (setup, options, timing...).

  Returns:
    A dict; `format_report`, `save_figure` and `save_json` read it.
  """
  sparsity = _surgery.sparsity_report(model)
  count = _flops.count_flops(model)
  dense_count = _flops.count_flops(reference)
  # The method's FLOPs kind (the method registry) picks the formula, which
  # reads the arguments it needs: the update window or the pruning one.
  end = steps if pruning_end_step is None else pruning_end_step
  kwargs = dict(update_freq=update_freq, end_step=end_step,
                pruning_begin_step=pruning_begin_step,
                pruning_end_step=max(end, pruning_begin_step), pruning_frequency=pruning_freq)
  train_flops = _flops.training_flops(count, method, steps, batch_size, **kwargs)
  training_from = "final model"
  moved = [(int(u["step"]), float(u["flops_ratio"])) for u in mask_updates
           if u.get("flops_ratio") is not None]
  if moved:  # Layer counts moved (redistribution): each stretch at its FLOPs.
    train_flops = _training_flops_from_history(
        count, method, steps, batch_size, moved,
        count.ratio if initial_flops_ratio is None else initial_flops_ratio, kwargs)
    training_from = "flops_history"
  dense_train_flops = _flops.training_flops(dense_count, "dense", steps, batch_size)
  size = _flops.model_size_bytes(model)
  dense_size = _flops.model_size_bytes(reference)
  report = dict(extra)
  report.update({
      "method": method,
      "steps": int(steps),
      "batch_size": int(batch_size),
      "test": {k: float(v) for k, v in (test_metrics or {}).items()},
      "sparsity": {
          "total": float(sparsity.sparsity),
          "params": int(sparsity.size),
          "nnz": int(sparsity.nnz),
          "units": int(sparsity.units),
          "dead_units": int(sparsity.dead_units),
          "layers": [{"name": r.name, "weight": r.weight, "shape": list(r.shape),
                      "size": int(r.size), "nnz": int(r.nnz),
                      "sparsity": float(r.sparsity), "units": r.units,
                      "dead_units": r.dead_units, "max_fan_in": r.max_fan_in}
                     for r in sparsity],
      },
      "flops": {
          "inference": float(count.sparse),
          "inference_dense": float(dense_count.dense),
          "inference_ratio": _ratio(count.sparse, dense_count.dense),
          "training": float(train_flops),
          "training_dense": float(dense_train_flops),
          "training_ratio": _ratio(train_flops, dense_train_flops),
          "training_from": training_from,
      },
      "size": {
          "bytes": int(size),
          "dense_bytes": int(dense_size),
          "ratio": _ratio(size, dense_size),
      },
      "history": [_plain(h) for h in history],
      "mask_updates": [_plain(u) for u in mask_updates],
  })
  return report


def _training_flops_from_history(count, method, steps, batch_size, moved, initial_ratio,
                                 kwargs):
  """Training FLOPs with the inference FLOPs each stretch of the run had.

  `moved` lists (step, FLOPs ratio after that step's update); before the
  first one the model had `initial_ratio`. Each stretch [start, end) costs
  what `training_flops` charges for steps start..end at its masks' FLOPs.

  Example:
  >>> count = _flops.FlopsCount(dense=100.0, sparse=10.0, layers=[])
  >>> flat = _training_flops_from_history(count, "snfs", 10, 1, [(5, 0.1)], 0.1,
  ...                                     {"update_freq": 5, "end_step": 10})
  >>> flat == _flops.training_flops(count, "snfs", 10, 1, update_freq=5, end_step=10)
  True
  >>> _training_flops_from_history(count, "snfs", 10, 1, [(5, 0.3)], 0.1,
  ...                              {"update_freq": 5, "end_step": 10}) > flat
  True
  """
  points = {0: initial_ratio}
  points.update(dict(moved))  # The last value of a step wins.
  steps_sorted = sorted(points)
  total = 0.0
  for i, start in enumerate(steps_sorted):
    end = min(steps_sorted[i + 1] if i + 1 < len(steps_sorted) else steps, steps)
    if end <= start:
      continue
    stretch = _flops.FlopsCount(dense=count.dense, sparse=points[start] * count.dense,
                                layers=[])
    total += (_flops.training_flops(stretch, method, end, batch_size, **kwargs) -
              _flops.training_flops(stretch, method, start, batch_size, **kwargs))
  return total


def flops_ratio(model):
  """Inference FLOPs of `model` relative to dense, or None if they cannot be counted.

  Example:
  >>> import keras_rigl as kr
  >>> round(flops_ratio(kr.sparsify(kr.models.lenet300_100(), 0.9)), 2)
  0.1
  """
  try:
    return float(_flops.count_flops(model).ratio)
  except (TypeError, ValueError):
    return None


def _ratio(value, reference):
  return float(value) / float(reference) if reference else 1.0


def _plain(entry):
  """Numbers as Python floats/ints so that json can write them."""
  out = {}
  for key, value in entry.items():
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
      out[key] = int(value)
    elif isinstance(value, (np.floating, float)) or hasattr(value, "numpy"):
      out[key] = float(value)
    else:
      out[key] = value
  return out


def sparsity_table(report):
  """The `kr.sparsity_report` table of the report's layers, as text."""
  rows = [SparsityRow(r["name"], r["weight"], tuple(r["shape"]), r["size"], r["nnz"],
                      r.get("units"), r.get("dead_units"), r.get("max_fan_in"))
          for r in report["sparsity"]["layers"]]
  return SparsityReport(rows).table()


def _human(value):
  for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
    if abs(value) >= scale:
      return f"{value / scale:,.2f}{unit}"
  return f"{value:,.0f}"


def title(report):
  """One line naming the run, e.g. 'rigl 90% erk: lenet300_100 on fashion_mnist'."""
  setup = report.get("setup", {})
  method = report["method"]
  what = f"{setup.get('model', '?')} on {setup.get('dataset', '?')}"
  if method in _registry.names() and _registry.get(method).model in ("dense", "small_dense"):
    return f"{method}: {what}"
  # A config sets snip_distribution only for the methods that take it (snip).
  distribution = setup.get("snip_distribution") or setup.get("distribution", "")
  options = f" min_fan_in={setup['min_fan_in']}" if setup.get("min_fan_in") else ""
  return f"{method} {setup.get('sparsity', 0):.0%} {distribution}{options}: {what}"


def format_report(report):
  """The text printed at the end of a run."""
  test = report.get("test", {})
  flops, size = report["flops"], report["size"]
  lines = ["", f"=== keras-rigl report: {title(report)} ==="]
  if "accuracy" in test:
    extra = "".join(f", {k} {v:.4f}" for k, v in test.items() if k != "accuracy")
    lines.append(f"test accuracy   {test['accuracy']:.4f}{extra}")
  run = report.get("run", {})
  if run:
    lines.append(
        f"training        {report['steps']:,} steps at batch {report['batch_size']}, "
        f"{run.get('keras', '')}"
        f"{'/' + run['backend'] if run.get('backend', 'tensorflow') != 'tensorflow' else ''}, "
        f"{run.get('strategy', '')} "
        f"({run.get('replicas', 1)} replica(s)), {run.get('seconds', 0):.0f} s")
  lines += ["", sparsity_table(report), ""]
  lines.append(
      f"inference FLOPs {flops['inference_ratio']:.3f}x dense "
      f"({_human(flops['inference'])} vs {_human(flops['inference_dense'])} per example)")
  lines.append(
      f"training FLOPs  {flops['training_ratio']:.3f}x dense "
      f"({_human(flops['training'])} vs {_human(flops['training_dense'])} for the run)")
  lines.append(
      f"model size      {size['ratio']:.3f}x dense "
      f"({size['bytes']:,} vs {size['dense_bytes']:,} bytes)")
  files = report.get("files", {})
  for name, path in files.items():
    lines.append(f"{name:<15} {path}")
  return "\n".join(lines)


def save_figure(report, path):
  """Writes a PNG: per-layer density, mask change per update, accuracy per epoch.

  Needs matplotlib (imported here, so that the rest of keras_rigl does not).
  (Example in the module docstring.)
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")  # Files only: never needs a display.
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  layers = report["sparsity"]["layers"]
  names = [r["name"] if r["weight"] in ("kernel", "") else f"{r['name']}/{r['weight']}"
           for r in layers]
  density = [1.0 - r["sparsity"] for r in layers]
  width = max(8.0, min(40.0, 0.22 * len(names) + 4))
  fig, axes = plt.subplots(3, 1, figsize=(width, 11),
                           gridspec_kw={"height_ratios": [1.3, 1, 1]})
  fig.suptitle(title(report))
  dead = report["sparsity"].get("dead_units")

  ax = axes[0]
  ax.bar(range(len(names)), density, color="tab:blue")
  for i, r in enumerate(layers):  # Units cut off from every input.
    if r.get("dead_units"):
      ax.text(i, density[i] + 0.02, f"{r['dead_units']}/{r['units']}\ndead",
              ha="center", va="bottom", fontsize=7, color="tab:red")
  ax.set_xticks(range(len(names)))
  ax.set_xticklabels(names, rotation=90, fontsize=7 if len(names) > 20 else 9)
  ax.set_ylim(0, 1.05)
  ax.set_ylabel("density (1 - sparsity)")
  ax.set_title(f"per-layer density; total {1 - report['sparsity']['total']:.3f}"
               + (f"; {dead} units without inputs (red)" if dead else ""))

  ax = axes[1]
  updates = report.get("mask_updates", [])
  if updates:
    ax.plot([u["step"] for u in updates], [u["mask_change"] for u in updates],
            marker=".", color="tab:orange")
    ax.set_xlabel("step")
    ax.set_ylabel("fraction of mask entries changed")
  else:
    ax.text(0.5, 0.5, "no mask updates", ha="center", va="center",
            transform=ax.transAxes)
  ax.set_title("mask change per update")

  ax = axes[2]
  history = report.get("history", [])
  for key, label in (("accuracy", "train"), ("val_accuracy", "eval")):
    points = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
    if points:
      ax.plot(*zip(*points), marker="o", label=label)
  if history:
    ax.legend()
  ax.set_xlabel("epoch")
  ax.set_ylabel("accuracy")
  ax.set_title("accuracy per epoch")
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=100)
  plt.close(fig)
  _write(path, buffer.getvalue(), "wb")
  return path


def save_json(report, path):
  """Writes the report dict as indented JSON."""
  _write(path, json.dumps(report, indent=2, default=_json_default), "w")
  return path


def _write(path, content, mode):
  """Writes a local or remote (gs://...) file through tf.io.gfile."""
  directory = os.path.dirname(path)
  if directory:
    tf.io.gfile.makedirs(directory)
  with tf.io.gfile.GFile(path, mode) as f:
    f.write(content)


def _json_default(value):
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (np.floating,)):
    return float(value)
  if isinstance(value, (tuple, set)):
    return list(value)
  return str(value)
