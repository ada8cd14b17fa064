"""Whole-model surgery: sparsify (wrap layers), strip (unwrap), sparsity_report."""

import dataclasses
from typing import Optional
import warnings

import numpy as np
from keras_rigl.backend import tf

from keras_rigl import _keras
from keras_rigl import connectivity as _connectivity
from keras_rigl._keras import keras
from keras_rigl.distributions import check_seed, layer_sparsities
from keras_rigl.layers import capacity as _capacity
from keras_rigl.layers import convert as _convert
from keras_rigl.layers.base import CompressedLayer
from keras_rigl.walk import graph_layers, walk_layers  # pylint: disable=unused-import
from keras_rigl.layer_registry import (distribution_shapes, is_composite, is_sparsifiable,
                                       sparsifiable_weights)
from keras_rigl.wrapper import SparseWrapper


def _check_graph_model(model, what):
  if not isinstance(model, keras.Model):
    raise TypeError(f"{what} expects a keras Model, got {type(model).__name__}.")
  if not _keras.is_graph_model(model):
    raise TypeError(
        f"{what} works on Sequential and Functional models; "
        f"{type(model).__name__} is a subclassed model, whose layers cannot be "
        "re-wired from outside. Wrap its layers with keras_rigl.SparseWrapper "
        "inside the model's __init__ instead.")
  if not model.built:
    raise ValueError(
        f"{what} needs a built model (weights with known shapes). Give the "
        "model an Input / input_shape or call it once on data first.")


def _weight_keys(layer):
  """Keys of a layer's sparsifiable weights for layer_sparsities."""
  weights = sparsifiable_weights(layer)
  if len(weights) == 1:
    return {weights[0][0]: layer.name}
  return {key: f"{layer.name}/{key}" for key, _ in weights}


def _clone(model, clone_layer):
  """keras.models.clone_model, recursing into nested graph models ourselves."""
  def clone_function(layer):
    if isinstance(layer, keras.Model) and _keras.is_graph_model(layer):
      return _clone(layer, clone_layer)
    return clone_layer(layer)
  return keras.models.clone_model(model, clone_function=clone_function)


def _fresh(layer):
  new = layer.__class__.from_config(layer.get_config())
  if (_keras.IS_KERAS3 and isinstance(layer, keras.layers.MultiHeadAttention)
      and layer.built and not new.built):
    # Its build needs the value shape too, which a wrapper does not see.
    new.build_from_config(layer.get_build_config())
  return new


STORAGES = ("masked", "compressed")
# Largest dense kernel `strip` builds by default (bytes).
DEFAULT_MAX_DENSE_BYTES = 1 << 30


def sparsify(model, sparsity, distribution="erk", erk_power_scale=1.0,
             custom_sparsity=None, exclude=None, seed=0, mask_init="random",
             storage="masked", capacity=None):
  """A copy of `model` whose supported layers are wrapped in `SparseWrapper`.

  Per-layer sparsities come from `layer_sparsities` over all wrapped layers;
  the original weights are kept (multiplied by the masks). Layers that end up
  with sparsity 0 (custom 0, or made dense by ER/ERK) are left unwrapped, and
  so are unsupported layers (BatchNormalization, ...).

  Args:
    model: a built Sequential or Functional model (nested ones included).
    sparsity: overall target sparsity in [0, 1).
    distribution: "uniform", "er" or "erk".
    erk_power_scale: exponent of the ER/ERK raw densities.
    custom_sparsity: {layer name: sparsity} kept as given and left out of the
      scaling (e.g. ``{"conv1": 0.0}`` keeps the first layer dense). A layer
      with several kernels (SeparableConv2D, GRU/LSTM/SimpleRNN,
      Bidirectional, MultiHeadAttention) takes "name" for all of them or
      "name/<weight key>" for one, e.g. "gru/recurrent_kernel",
      "bigru/backward_kernel", "mha/query_kernel". ER/ERK see recurrent
      kernels as stored ((n_in, gates * units), (units, gates * units)) and
      EinsumDense / attention kernels as their (fan_in, fan_out) matrix.
    exclude: layer names, or a predicate ``f(layer) -> bool``, of layers to
      leave dense and out of the scaling.
    seed: seed of the random mask positions.
    mask_init: "random" (sparse from the start) or "dense" (all-ones masks, for
      `MagnitudePruningScheduler`).
    storage: "masked" (SparseWrapper: dense kernel + mask) or "compressed":
      Dense, 1x1 Conv2D (stride 1, no dilation, channels_last) and Embedding
      layers become `keras_rigl.layers.SparseDense` / `SparsePointwiseConv2D` /
      `SparseEmbedding` holding only their active values and positions (the
      same positions and values the masked storage with this seed would
      keep); other layers are wrapped as with "masked".
    capacity: with storage="compressed": None (each compressed layer stores
      exactly its entries; its count is fixed) or a factor >= 1.0 giving
      every compressed layer ``ceil(capacity * nnz)`` slots (see
      `keras_rigl.layers.SparseDense`), which
      ``RigLScheduler(data, redistribution=...)`` needs to move counts
      between compressed layers (e.g. 1.25). Masked layers have room anyway.

  Returns:
    A new model of the same kind; compile it before training.

  Example:
  >>> model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(300),
  ...                           keras.layers.Dense(10)])
  >>> sparse = sparsify(model, 0.9, distribution="uniform")
  >>> [round(l.sparsity, 2) for l in sparse.layers]
  [0.9, 0.9]

  Compressed, with 25% headroom for redistribution:
  >>> roomy = sparsify(model, 0.9, distribution="uniform", storage="compressed",
  ...                  capacity=1.25)
  >>> [(l.compressed_weights[0].nnz, l.compressed_weights[0].capacity) for l in roomy.layers]
  [(23520, 29400), (300, 375)]
  """
  _check_graph_model(model, "sparsify")
  seed = check_seed(seed)
  if storage not in STORAGES:
    raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}.")
  if capacity is not None and storage != "compressed":
    raise ValueError(
        f"sparsify: capacity={capacity!r} applies to storage='compressed' only (masked "
        "layers keep their dense kernel, so their counts can move anyway). Pass "
        "storage='compressed', or leave capacity=None.")
  capacity = _capacity.check_capacity(capacity, "sparsify")
  if storage == "compressed" and mask_init != "random":
    raise ValueError(
        f"storage='compressed' needs mask_init='random', got {mask_init!r}: a compressed "
        "layer stores a fixed number of entries, so it cannot start dense and be pruned. "
        "Use storage='masked' for MagnitudePruningScheduler.")
  layers = list(graph_layers(model))
  wrapped = [layer.name for layer in layers
             if isinstance(layer, (SparseWrapper, CompressedLayer))]
  if wrapped:
    raise ValueError(
        f"sparsify got a model that is already sparse (sparse layers "
        f"{wrapped}). Sparsify the original dense model, or call "
        "keras_rigl.strip(model) first to get a plain model to sparsify again.")
  names = [layer.name for layer in layers]
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise ValueError(f"Layer names {duplicates} occur more than once (nested models); "
                     "give the layers unique names so sparsities can be assigned.")
  if exclude is None:
    excluded = lambda layer: False
  elif callable(exclude):
    excluded = exclude
  else:
    if isinstance(exclude, str):
      exclude = {exclude}
    elif isinstance(exclude, (list, tuple, set, frozenset)) and all(
        isinstance(name, str) for name in exclude):
      exclude = set(exclude)
    else:
      raise TypeError(
          f"exclude must be layer names (a list of strings) or a predicate "
          f"f(layer) -> bool, got {exclude!r}; e.g. exclude=['logits'] or "
          "exclude=lambda layer: layer.name.startswith('conv1').")
    unknown = sorted(exclude - set(names))
    if unknown:
      raise ValueError(f"exclude names {unknown}, which are not layers of the model.")
    excluded = lambda layer: layer.name in exclude
  if custom_sparsity is not None and not isinstance(custom_sparsity, dict):
    raise TypeError(
        f"custom_sparsity must be a dict {{layer name: sparsity}}, got "
        f"{type(custom_sparsity).__name__} {custom_sparsity!r}; e.g. "
        "custom_sparsity={'fc1': 0.8}.")
  targets = [layer for layer in layers if is_sparsifiable(layer) and not excluded(layer)]
  keys = {layer.name: _weight_keys(layer) for layer in targets}
  shapes = {}
  for layer in targets:
    for key, shape in distribution_shapes(layer).items():
      shapes[keys[layer.name][key]] = shape
  custom = {}
  for name, value in (custom_sparsity or {}).items():
    if name in keys and name not in shapes:  # A multi-kernel layer's name.
      custom.update({full: value for full in keys[name].values()})
    else:
      custom[name] = value
  excluded_names = sorted(set(custom) & (set(names) - set(keys)))
  if excluded_names:
    raise ValueError(f"custom_sparsity names {excluded_names}, which are excluded "
                     "or cannot be sparsified.")
  per_weight = layer_sparsities(shapes, sparsity, distribution, erk_power_scale, custom)
  per_layer = {}
  for layer in targets:
    values = {key: per_weight[full] for key, full in keys[layer.name].items()}
    if any(values.values()):
      single = len(values) == 1
      per_layer[layer.name] = next(iter(values.values())) if single else values
  if not per_layer and float(sparsity) > 0:
    warnings.warn(
        f"sparsify: no layer of the model ends up sparse ({len(targets)} supported "
        "layers left after `exclude`, none with sparsity > 0): the result is a dense "
        "copy. Check `exclude` and `custom_sparsity`.", stacklevel=2)

  pairs = []
  def clone_layer(layer):
    if layer.name in per_layer and storage == "compressed" and _convert.compressible(layer):
      new = _convert.to_compressed(layer, per_layer[layer.name], seed, capacity)
    elif layer.name in per_layer:
      new = SparseWrapper(_fresh(layer), sparsity=per_layer[layer.name],
                          seed=seed, mask_init=mask_init)
    else:
      new = _fresh(layer)
    pairs.append((layer, new))
    return new

  sparse_model = _clone(model, clone_layer)
  for old, new in pairs:
    if isinstance(new, SparseWrapper):
      new.layer.set_weights(old.get_weights())
      new.apply_masks()
    elif isinstance(new, CompressedLayer):
      _convert.copy_weights(old, new, per_layer[old.name], seed)
    elif getattr(old, "weights", None):  # Keras 3 ops (x + y) have none.
      new.set_weights(old.get_weights())
  return sparse_model


def strip(model, max_dense_bytes=DEFAULT_MAX_DENSE_BYTES, keep_compressed=False):
  """A plain copy of `model` with every SparseWrapper replaced by its layer.

  The unwrapped layers hold ``W * M``: same outputs, no masks, ready for
  export or for tools that do not know keras_rigl. Compressed layers
  (`keras_rigl.layers`) become the plain Dense / Conv2D / Embedding with a
  dense kernel, which must fit in `max_dense_bytes`, unless
  `keep_compressed` (then they are copied as they are).

  Args:
    model: a Sequential or Functional model.
    max_dense_bytes: largest dense kernel built from a compressed layer; a
      larger one is a ValueError giving its size.
    keep_compressed: keep compressed layers compressed (what `export` does
      for SavedModels).

  Example:
  >>> import numpy as np
  >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
  >>> sparse_model = sparsify(model, 0.5, distribution="uniform")
  >>> plain = strip(sparse_model)
  >>> any(isinstance(l, SparseWrapper) for l in plain.layers)
  False
  >>> x = np.ones((2, 8), "float32")
  >>> np.allclose(plain(x), sparse_model(x))
  True
  """
  _check_graph_model(model, "strip")
  pairs = []
  def clone_layer(layer):
    if isinstance(layer, CompressedLayer) and not keep_compressed:
      _check_dense_fits(layer, max_dense_bytes)
      new = layer.dense_layer()
    else:
      new = _fresh(layer.layer if isinstance(layer, SparseWrapper) else layer)
    pairs.append((layer, new))
    return new

  plain = _clone(model, clone_layer)
  for old, new in pairs:
    if isinstance(old, CompressedLayer):
      new.set_weights(old.get_weights() if keep_compressed else old.dense_weights())
    elif isinstance(old, SparseWrapper):
      masked = {id(w): m for w, m in old.masked_weights}
      values = [np.asarray(w) * np.asarray(masked[id(w)]) if id(w) in masked
                else np.asarray(w) for w in old.layer.weights]
      new.set_weights(values)
    elif getattr(old, "weights", None):  # Keras 3 ops (x + y) have none.
      new.set_weights(old.get_weights())
  return plain


def _check_dense_fits(layer, max_dense_bytes):
  for weight in layer.compressed_weights:
    size = weight.size * tf.as_dtype(weight.values.dtype).size
    if size > max_dense_bytes:
      raise ValueError(
          f"strip: compressed layer {layer.name!r} has a dense {weight.key} of shape "
          f"{weight.shape} = {weight.size:,} entries ({size:,} bytes), over "
          f"max_dense_bytes={max_dense_bytes:,}. Pass a larger max_dense_bytes if it "
          "fits in memory, or keep the layer compressed (strip(..., keep_compressed="
          "True); keras_rigl.export keeps SavedModels compressed).")


@dataclasses.dataclass
class SparsityRow:
  """One sparsifiable weight: its layer, shape, size, non-zeros and units.

  `units` is the size of the weight's last axis (its output units: a Dense
  kernel's columns, a convolution's output channels); `dead_units` counts
  those without any active input connection and `max_fan_in` is the most
  active inputs one unit has. None when not known (rows built by hand).
  """
  name: str
  weight: str
  shape: tuple
  size: int
  nnz: int
  units: Optional[int] = None
  dead_units: Optional[int] = None
  max_fan_in: Optional[int] = None

  @property
  def sparsity(self):
    return 1.0 - self.nnz / self.size if self.size else 0.0


@dataclasses.dataclass
class SparsityReport:
  """Rows of `sparsity_report`, with totals; ``str(report)`` is a table."""
  rows: list

  @property
  def size(self):
    return sum(r.size for r in self.rows)

  @property
  def nnz(self):
    return sum(r.nnz for r in self.rows)

  @property
  def sparsity(self):
    return 1.0 - self.nnz / self.size if self.size else 0.0

  @property
  def units(self):
    return sum(r.units or 0 for r in self.rows)

  @property
  def dead_units(self):
    """Output units without any active input, over all rows."""
    return sum(r.dead_units or 0 for r in self.rows)

  def __iter__(self):
    return iter(self.rows)

  def __len__(self):
    return len(self.rows)

  def __getitem__(self, index):
    return self.rows[index]

  def table(self):
    header = ("layer", "weight", "shape", "params", "non-zero", "sparsity", "units",
              "dead units", "max fan-in")
    known = lambda value: "" if value is None else f"{value:,}"
    lines = [(r.name, r.weight, "x".join(map(str, r.shape)), f"{r.size:,}",
              f"{r.nnz:,}", f"{r.sparsity:.2%}", known(r.units), known(r.dead_units),
              known(r.max_fan_in)) for r in self.rows]
    lines.append(("total", "", "", f"{self.size:,}", f"{self.nnz:,}",
                  f"{self.sparsity:.2%}", f"{self.units:,}", f"{self.dead_units:,}", ""))
    widths = [max(len(str(row[i])) for row in [header] + lines) for i in range(len(header))]
    fmt = lambda row: "  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w)
                                for i, (c, w) in enumerate(zip(row, widths))).rstrip()
    rule = "-" * len(fmt(header))
    return "\n".join([fmt(header), rule] + [fmt(r) for r in lines[:-1]] +
                     [rule, fmt(lines[-1])])

  def __str__(self):
    return self.table()


def sparsity_report(model):
  """Per-weight sparsity of every sparsifiable layer of `model`.

  Wrapped layers count the ones of their masks, compressed layers their
  stored entries; plain supported layers count their non-zero weights.
  Each row also gives the weight's output units (its last axis), the dead
  units among them (no active input connection: at high sparsity RigL can
  cut units off this way, since a ReLU unit without inputs gets no gradient;
  see `RigLScheduler(min_fan_in=...)`) and the largest fan-in; the total row
  sums units and dead units.

  Example:
  >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="fc")])
  >>> report = sparsity_report(sparsify(model, 0.5, distribution="uniform"))
  >>> print(report)
  layer  weight  shape  params  non-zero  sparsity  units  dead units  max fan-in
  -------------------------------------------------------------------------------
  fc     kernel  8x4        32        16    50.00%      4           0           6
  -------------------------------------------------------------------------------
  total                     32        16    50.00%      4           0
  >>> report.sparsity, report.dead_units
  (0.5, 0)
  """
  if not isinstance(model, (keras.Model, keras.layers.Layer)):
    raise TypeError(f"sparsity_report expects a keras Model (or layer), got "
                    f"{type(model).__name__}; pass the model, e.g. "
                    "keras_rigl.sparsity_report(model).")
  rows = []
  inside = set()  # Sublayers of RNN/attention layers, reported by their owner.
  for layer in walk_layers(model):
    if id(layer) in inside:
      continue
    if is_composite(layer):
      inside.update(id(sub) for sub in walk_layers(layer))
    if isinstance(layer, CompressedLayer):
      for weight in layer.compressed_weights:
        live = np.asarray(weight.indices)[:weight.nnz]  # Dead slots (capacity) left out.
        fan_in = _connectivity.fan_in_of_positions(live, weight.n_cols)
        rows.append(_row(layer.name, weight.key, weight.shape, weight.nnz, fan_in))
    elif isinstance(layer, SparseWrapper):
      for key, (weight, mask) in zip(layer.weight_keys, layer.masked_weights):
        mask = np.asarray(mask)
        rows.append(_row(layer.layer.name, key, weight.shape,
                         int(np.count_nonzero(mask)), _connectivity.fan_in_of_mask(mask)))
    elif is_sparsifiable(layer) and layer.built:
      for key, weight in sparsifiable_weights(layer):
        value = np.asarray(weight)
        rows.append(_row(layer.name, key, weight.shape, int(np.count_nonzero(value)),
                         _connectivity.fan_in_of_mask(value)))
  return SparsityReport(rows)


def _row(name, key, shape, nnz, fan_in):
  shape = tuple(int(d) for d in shape)
  dead, widest = _connectivity.unit_stats(fan_in)
  return SparsityRow(name, key, shape, int(np.prod(shape)), nnz, units=int(len(fan_in)),
                     dead_units=dead, max_fan_in=widest)
