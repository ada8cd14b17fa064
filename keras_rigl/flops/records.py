"""The records `count_flops` returns: one `LayerFlops` row per layer, a `FlopsCount` in all.
"""

import dataclasses



@dataclasses.dataclass(frozen=True)
class LayerFlops:
  """Inference FLOPs of one layer with a kernel, per example.

  Attributes:
    name: layer name (``outer/inner`` inside nested models; the wrapped
      layer's name for a SparseWrapper).
    type: class name of the computing layer, e.g. "Conv2D".
    dense_flops: FLOPs with every weight present.
    sparse_flops: FLOPs counting only non-zero weights.
    density: fraction of the layer's kernel weights that are non-zero.
    params: number of kernel weights.
    fixed_flops: the part of the FLOPs that does not scale with density
      (bias adds, activations, minus one add per dot product).
    masked: True if the density came from a SparseWrapper's masks.
  """
  name: str
  type: str
  dense_flops: float
  sparse_flops: float
  density: float
  params: int
  fixed_flops: float
  masked: bool = False


@dataclasses.dataclass(frozen=True)
class FlopsCount:
  """Result of `count_flops`: totals per example and one row per layer.

  Attributes:
    dense: inference FLOPs per example if every kernel were dense.
    sparse: inference FLOPs per example counting only non-zero weights.
    layers: list of `LayerFlops` rows, in model order.
  """
  dense: float
  sparse: float
  layers: list
  sequence_length: int = None  # Time steps of recurrent/attention layers.

  @property
  def ratio(self):
    """sparse / dense, the "FLOPs (x dense)" columns of the paper."""
    return self.sparse / self.dense if self.dense else 1.0

  @property
  def params(self):
    """Kernel weights of the counted layers."""
    return sum(row.params for row in self.layers)

  @property
  def nnz(self):
    """Non-zero kernel weights of the counted layers."""
    return sum(row.params * row.density for row in self.layers)

  def table(self, scale=1e6):
    """A printable table of the rows and the totals (MFLOPs by default).

    Example:
    >>> from keras_rigl import models
    >>> from keras_rigl.flops import count_flops
    >>> print(count_flops(models.lenet300_100()).table())  # doctest: +ELLIPSIS
    layer ...
    """
    unit = {1.0: "FLOPs", 1e3: "KFLOPs", 1e6: "MFLOPs", 1e9: "GFLOPs"}.get(
        scale, f"x{scale:g} FLOPs")
    header = ("layer", "type", "density", f"dense {unit}", f"sparse {unit}")
    lines = [(row.name, row.type, f"{row.density:.3f}",
              f"{row.dense_flops / scale:,.3f}", f"{row.sparse_flops / scale:,.3f}")
             for row in self.layers]
    density = self.nnz / self.params if self.params else 1.0
    total = ("total", f"{self.ratio:.3f}x dense", f"{density:.3f}",
             f"{self.dense / scale:,.3f}", f"{self.sparse / scale:,.3f}")
    widths = [max(len(str(line[i])) for line in [header, total] + lines)
              for i in range(len(header))]

    def fmt(line):
      left = [str(v).ljust(w) for v, w in zip(line[:2], widths[:2])]
      right = [str(v).rjust(w) for v, w in zip(line[2:], widths[2:])]
      return "  ".join(left + right)

    rule = "-" * len(fmt(header))
    text = "\n".join([fmt(header), rule] + [fmt(l) for l in lines] + [rule, fmt(total)])
    if self.sequence_length:
      text += f"\n(per sequence of {self.sequence_length} time steps)"
    return text

  def __str__(self):
    return self.table()
