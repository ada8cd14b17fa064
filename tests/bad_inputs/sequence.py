"""Bad inputs of recurrent/attention layers, their FLOPs and examples/train_lm.py."""

import keras_rigl as kr
from keras_rigl._keras import keras
from keras_rigl.data import text
from tests.bad_inputs import BadInput

L = keras.layers


def _gru_unknown_length():
  return keras.Sequential([keras.Input((None, 4)), L.GRU(3)])


class _Cell(L.Layer):
  state_size = 2

  def call(self, inputs, states):
    return inputs[:, :2], states


def _lm_config(**overrides):
  from examples import train_lm  # pylint: disable=g-import-not-at-top
  return train_lm.LMConfig(**overrides).check()


ROWS = [
    BadInput("count_flops/unknown_sequence_length",
             lambda: kr.count_flops(_gru_unknown_length()), ValueError,
             ("sequence_length=",), "count_flops of an RNN built on keras.Input((None, ...))"),
    BadInput("count_flops/sequence_length_zero",
             lambda: kr.count_flops(_gru_unknown_length(), sequence_length=0), ValueError,
             ("sequence_length", "positive integer"), "count_flops(..., sequence_length=0)"),
    BadInput("SparseWrapper/custom_rnn_cell",
             lambda: kr.SparseWrapper(L.RNN(_Cell())), ValueError,
             ("SimpleRNN/LSTM/GRU", "get_sparsifiable_weights"),
             "wrapping an RNN whose cell is not SimpleRNN/LSTM/GRU"),
    BadInput("text/missing_corpus",
             lambda: text.load_corpus("/nonexistent/corpus"), text.CorpusNotFoundError,
             ("make corpus", "--data_dir"), "train_lm.py without the fortunes package"),
    BadInput("train_lm/method", lambda: _lm_config(method="lottery"), ValueError,
             ("--method", "rigl"), "train_lm.py --method=lottery"),
    BadInput("train_lm/heads", lambda: _lm_config(d_model=10, num_heads=4), ValueError,
             ("--d_model", "--num_heads"), "train_lm.py with d_model not a multiple of heads"),
    BadInput("train_lm/pruning_window",
             lambda: _lm_config(train_steps=10, pruning_begin_step=8, pruning_end_step=4),
             ValueError, ("--pruning_begin_step", "--pruning_end_step"),
             "train_lm.py with the pruning window reversed"),
]
