"""FLOPs and model-size accounting, counted the way the RigL paper counts.

The paper (Appendix H) and the authors' colabs count with the MicroNet
challenge rules:

* Only layers with kernels cost FLOPs: convolutions (incl. depthwise,
  separable, transposed) and Dense layers. Batch norm, pooling, residual adds
  and standalone activations are ignored.
* Multiplies and adds are counted separately. A dot product of length ``n``
  is ``n`` multiplies and ``n - 1`` adds; every kernel layer is charged one
  bias add and one activation op per output element (whatever actually
  follows it, as in the authors' count). So one output element of a layer
  with ``K`` weights per output costs ``2 * K * density + 1`` FLOPs.
* A sparse kernel counts only its non-zero weights: the ``K`` part scales with
  the kernel's density (the mean of its mask). The first layer is counted
  like any other.

Sequence layers (our extension of the same rules; the authors' counter has
no recurrent or attention layers, so we count them the way it counts Dense):

* A recurrent layer (SimpleRNN, LSTM, GRU; both directions of a
  Bidirectional) costs its per-time-step FLOPs times the sequence length
  ``T``. One step computes ``g * units`` gate pre-activations (``g`` = 1, 4, 3
  gates), each a dot product over the input and the previous state:
  ``2 * (n_in * d_kernel + units * d_recurrent) + 1`` FLOPs (multiplies and
  adds of both products, their sum, the bias add and the gate activation,
  exactly ``2 K d + 1`` of a Dense output). The element-wise gate arithmetic
  adds ``5 * units`` per step for LSTM (``f*c``, ``i*g``, their sum,
  ``tanh(c)``, ``o*tanh(c)``) and for GRU (``r*h``-part, ``z*h``, ``1-z``,
  ``(1-z)*h~``, their sum), 0 for SimpleRNN. Only the ``K`` part scales with
  the masks' densities.
* TimeDistributed(layer) costs the layer's FLOPs once per time step.
* EinsumDense and the query/key/value/output projections of
  MultiHeadAttention count like Dense: ``2 * K * d + 1`` per output element,
  ``K`` being the kernel's contracted (fan-in) size.
* The attention scores ``Q K^T``, the softmax and the weighted sum of the
  values have no weights, so by the paper's rules they cost nothing and
  ``count_flops`` leaves them out. ``include_attention_scores=True`` adds
  them (per head: ``Tq*Tv*(2k-1)`` for the scores, ``3*Tq*Tv`` for the softmax
  (exp, sum, divide), ``Tq*k`` for the ``1/sqrt(k)`` scaling, ``Tq*v*(2Tv-1)``
  for the weighted sum) as FLOPs that do not scale with density.
* The sequence length is read from the model's input shape; when that is
  unknown (``keras.Input((None,))``) pass ``sequence_length=``. The length
  used is reported as ``FlopsCount.sequence_length``.

Training FLOPs follow Appendix H: a training step costs 3 forward passes
(forward ``f``, backward ``2 f``: gradients w.r.t. activations and
weights), so ``3 f_D`` per example dense, ``3 f_S`` for static / SET / SNIP,
``2 f_S + f_D`` for SNFS (dense weight gradients every step), and
``(3 f_S dT + 2 f_S + f_D) / (dT + 1)`` for RigL (dense gradients once every
``dT`` steps). Magnitude pruning pays ``3 f(t)`` with ``f(t)`` following the
sparsity schedule.

The package, by concern: `reading` (a model's leaf layers, calls, kernels and
densities), `inference` (`count_flops`, `kernel_shapes`), `sequence`
(recurrent and attention layers), `size` (`model_size_bytes`), `training`
(`training_flops`), `records` (`LayerFlops`, `FlopsCount`).

Example:
>>> from keras_rigl import flops, models
>>> count = flops.count_flops(models.lenet300_100(), sparsities={"fc1": 0.9, "fc2": 0.9})
>>> round(count.ratio, 3)
0.104

"""

from keras_rigl.flops.inference import count_flops, kernel_shapes
from keras_rigl.flops.records import FlopsCount, LayerFlops
from keras_rigl.flops.size import model_size_bytes
from keras_rigl.flops.training import training_flops
