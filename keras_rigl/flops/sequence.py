"""FLOPs of recurrent (SimpleRNN/LSTM/GRU, Bidirectional) and MultiHeadAttention
layers: per time step times the sequence length (see the package docstring).
"""

import numpy as np

from keras_rigl.flops.reading import (_calls, _cell_costs, _check_known, _fill_time,
                                      _kernels, _masks_of, _size)
from keras_rigl.flops.records import LayerFlops


def _rnn_flops(layer, length, density):
  """(dense, sparse, fixed) FLOPs of one recurrent layer over `length` steps."""
  gates, elementwise = _cell_costs(layer.cell)
  kernel, recurrent = layer.cell.kernel, layer.cell.recurrent_kernel
  n_in, units = int(kernel.shape[0]), int(recurrent.shape[0])
  outputs = gates * units
  fixed = outputs + elementwise * units  # bias add + activation; gate arithmetic.
  dense = 2 * (n_in + units) * outputs + fixed
  sparse = 2 * (n_in * density["kernel"] + units * density["recurrent_kernel"]) * outputs + fixed
  return length * dense, length * sparse, length * fixed


def _attention_flops(layer, query_shape, value_shape, density, scores):
  """(dense, sparse, fixed) FLOPs of one MultiHeadAttention call."""
  t_q = int(np.prod(query_shape[1:-1]))
  t_v = int(np.prod(value_shape[1:-1]))
  kernels = dict(_kernels(layer, "attention"))
  heads, key_dim = (int(d) for d in kernels["query_kernel"].shape[-2:])
  value_dim = int(kernels["value_kernel"].shape[-1])
  # (output elements, fan-in) of each projection.
  shapes = {"query_kernel": (t_q * heads * key_dim, int(kernels["query_kernel"].shape[0])),
            "key_kernel": (t_v * heads * key_dim, int(kernels["key_kernel"].shape[0])),
            "value_kernel": (t_v * heads * value_dim, int(kernels["value_kernel"].shape[0])),
            "output_kernel": (t_q * int(kernels["output_kernel"].shape[-1]), heads * value_dim)}
  dense = sparse = fixed = 0.0
  for key, (n_out, fan_in) in shapes.items():
    dense += n_out * (2 * fan_in + 1)
    sparse += n_out * (2 * fan_in * density[key] + 1)
    fixed += n_out
  if scores:
    extra = heads * (t_q * t_v * (2 * key_dim - 1) + 3 * t_q * t_v + t_q * key_dim
                     + t_q * value_dim * (2 * t_v - 1))
    dense, sparse, fixed = dense + extra, sparse + extra, fixed + extra
  return dense, sparse, fixed


def _sequence_row(prefix, leaf, inner, kind, graph, calls, densities, options):
  """LayerFlops of a recurrent, bidirectional or attention layer."""
  names = densities.names(prefix, leaf)
  masks = _masks_of(leaf)
  kernels = []
  density = {}
  for key, variable in _kernels(inner, kind):
    value, from_mask = densities.density(names, key, variable, masks)
    density[key] = value
    kernels.append((variable, value, from_mask))
  shapes = _calls(graph, leaf, all_inputs=True)
  if not shapes:
    raise ValueError(
        f"Layer {names[0]!r} has no call recorded in its model. count_flops needs "
        "a Functional or Sequential model built on keras.Input(...).")
  length = options.get("sequence_length")
  dense = sparse = fixed = 0.0
  for input_shapes, _ in shapes:
    input_shapes = [_fill_time(s, length) for s in input_shapes]
    if kind == "attention":
      query, value = input_shapes[0], input_shapes[1] if len(input_shapes) > 1 else input_shapes[0]
      for shape in (query, value):
        _check_known(shape[1:-1], names[0], "sequence_length")
      options.setdefault("seen_length", int(query[1]))
      d, s, f = _attention_flops(inner, query, value, density,
                                 options.get("include_attention_scores", False))
    else:
      steps = input_shapes[0][1]
      _check_known((steps,), names[0], "sequence_length")
      options.setdefault("seen_length", int(steps))
      rnns = ([("", inner)] if kind == "rnn" else
              [("forward_", inner.forward_layer), ("backward_", inner.backward_layer)])
      d = s = f = 0.0
      for side, rnn in rnns:
        part = {key: density[side + key] for key in ("kernel", "recurrent_kernel")}
        dd, ss, ff = _rnn_flops(rnn, int(steps), part)
        d, s, f = d + dd, s + ss, f + ff
    dense, sparse, fixed = dense + calls * d, sparse + calls * s, fixed + calls * f
  params = sum(_size(v) for v, _, _ in kernels)
  nnz = sum(_size(v) * d for v, d, _ in kernels)
  return LayerFlops(
      name=names[0], type=type(inner).__name__, dense_flops=float(dense),
      sparse_flops=float(sparse), density=nnz / params if params else 1.0,
      params=params, fixed_flops=float(fixed),
      masked=any(from_mask for _, _, from_mask in kernels))
