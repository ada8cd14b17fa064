r"""Trains the RigL paper's character-level language model (section 4.2).

The paper's model, at a scale a laptop runs: bytes (vocabulary 256) ->
Embedding 128 -> GRU with state 512 -> readout Dense 256 -> Dense 128 ->
Dense 256 logits; Adam 7e-4; mask updates every 100 steps until the end of
training, drop fraction 0.1 with cosine decay; 75% uniform sparsity (ERK with
--distribution=erk). The embedding stays dense (32K weights, a lookup with no
FLOPs); every other kernel, the GRU's input and recurrent kernels included,
is sparse. What is reduced from the paper (WikiText-103, long sequences, many
more steps) are the corpus, the sequence length (--sequence_length=64) and the
steps (--train_steps=2000, batch 32): the defaults take about 10 minutes on
two CPU cores (~0.25 s a step). The report gives held-out bits per character, the sparsity table,
inference FLOPs per sequence and training FLOPs:

  python examples/train_lm.py --method=rigl --model_dir=/tmp/lm_rigl
  python examples/train_lm.py --method=pruning --train_steps=4000
  python examples/train_lm.py --model=transformer --method=set

Methods: dense, small_dense (dense with the sparse model's parameter count),
static, set, rigl, pruning (Zhu & Gupta gradual magnitude pruning from
dense, 25% -> 75% of the run), snfs, and any method registered with
`keras_rigl.methods.register` that trains a dense or sparse model. --model=transformer trains a small
decoder-only Transformer instead (causal MultiHeadAttention + Dense
feed-forward, pre-norm; every projection sparse).

Data: the English text of the Debian package `fortunes` (`make corpus`
installs it), or any folder of text files with --data_dir; the last
--held_out_fraction of every file is held out. With --model_dir the run
writes checkpoints and resumes where it stopped (BackupAndRestore),
TensorBoard logs, report.json and report.png.
"""

import os
import sys

if __package__ in (None, ""):
  # `python examples/train_lm.py`: make `keras_rigl` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses
import importlib.util
import json
import math
import time
import types

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

import keras_rigl as kr
from keras_rigl._keras import keras
from keras_rigl.data import text as text_data
from keras_rigl.methods import registry
from keras_rigl.recipes import configs as recipe_configs
# pylint: enable=g-import-not-at-top,wrong-import-position

L = keras.layers
MODELS = ("gru", "transformer")
# The model kinds this script builds; every registered method of those kinds
# trains here (keras_rigl.methods.registry).
MODEL_KINDS = ("dense", "small_dense", "sparse")
DISTRIBUTIONS = ("uniform", "erk")
SCHEDULES = ("constant", "cosine", "exponential")


@dataclasses.dataclass
class LMConfig:
  """Everything a run needs; the flags fill it, tests and benchmarks too."""
  model: str = "gru"
  method: str = "rigl"
  sparsity: float = 0.75
  distribution: str = "uniform"
  # GRU model (the paper's sizes).
  embedding_dim: int = 128
  gru_units: int = 512
  readout: tuple = (256, 128)
  # Transformer model.
  d_model: int = 128
  num_layers: int = 2
  num_heads: int = 4
  ff_dim: int = 512
  # Training.
  sequence_length: int = 64
  batch_size: int = 32
  train_steps: int = 2000
  steps_per_epoch: int = 100
  learning_rate: float = 7e-4
  update_freq: int = 100
  drop_fraction: float = 0.1
  drop_fraction_schedule: str = "cosine"
  end_step: int = None            # None: updates until the end of training.
  pruning_begin_step: int = None  # None: 25% of the run.
  pruning_end_step: int = None    # None: 75% of the run.
  seed: int = 0
  # Data and output.
  data_dir: str = None
  held_out_fraction: float = 0.1
  eval_windows: int = 2048        # Held-out windows evaluated (0: all).
  model_dir: str = None
  verbose: int = 1

  def check(self):
    """Raises ValueError naming the flag for any bad value."""
    def positive(name):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"--{name} must be a positive integer, got {value!r}.")
    if self.model not in MODELS:
      raise ValueError(f"--model must be one of {MODELS}, got {self.model!r}.")
    if self.method not in methods():
      raise ValueError(f"--method must be one of {methods()}, got {self.method!r}.")
    if self.distribution not in DISTRIBUTIONS:
      raise ValueError(f"--distribution must be one of {DISTRIBUTIONS}, got "
                       f"{self.distribution!r}.")
    if not isinstance(self.sparsity, (int, float)) or not 0 <= self.sparsity < 1:
      raise ValueError(f"--sparsity must be in [0, 1), got {self.sparsity!r}.")
    if registry.get(self.method).model != "dense" and self.sparsity == 0:
      raise ValueError(f"--method={self.method} needs --sparsity > 0.")
    for name in ("embedding_dim", "gru_units", "d_model", "num_layers", "num_heads",
                 "ff_dim", "sequence_length", "batch_size", "train_steps",
                 "steps_per_epoch", "update_freq"):
      positive(name)
    for name in ("learning_rate", "drop_fraction", "held_out_fraction"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"--{name} must be a number, got {value!r}.")
    for name in ("end_step", "pruning_begin_step", "pruning_end_step", "eval_windows",
                 "seed"):
      value = getattr(self, name)
      optional = name not in ("eval_windows", "seed")
      if (value is not None or not optional) and (isinstance(value, bool) or
                                                  not isinstance(value, (int, np.integer))):
        raise ValueError(f"--{name} must be an integer, got {value!r}.")
    if self.seed < 0:
      raise ValueError(f"--seed must be an integer >= 0, got {self.seed!r}.")
    if self.drop_fraction_schedule not in SCHEDULES:
      raise ValueError(f"--drop_fraction_schedule must be one of {SCHEDULES}, got "
                       f"{self.drop_fraction_schedule!r}.")
    if self.verbose not in (0, 1, 2):
      raise ValueError(f"--verbose must be 0, 1 or 2, got {self.verbose!r}.")
    if not self.readout or any(not str(u).isdigit() or int(u) < 1 for u in self.readout):
      raise ValueError(f"--readout must be positive layer sizes, got {self.readout!r}.")
    if self.d_model % self.num_heads:
      raise ValueError(f"--d_model ({self.d_model}) must be a multiple of --num_heads "
                       f"({self.num_heads}).")
    if not 0 < self.learning_rate < float("inf"):
      raise ValueError(f"--learning_rate must be positive, got {self.learning_rate!r}.")
    if not 0 <= self.drop_fraction <= 1:
      raise ValueError(f"--drop_fraction must be in [0, 1], got {self.drop_fraction!r}.")
    if self.end_step is not None and not 0 <= self.end_step <= self.train_steps:
      raise ValueError(f"--end_step must be in [0, --train_steps={self.train_steps}], "
                       f"got {self.end_step!r}.")
    begin, end = self.pruning_window()
    if not 0 <= begin < end <= self.train_steps:
      raise ValueError(f"Need 0 <= --pruning_begin_step ({begin}) < --pruning_end_step "
                       f"({end}) <= --train_steps ({self.train_steps}).")
    if not 0 < self.held_out_fraction < 1:
      raise ValueError(f"--held_out_fraction must be in (0, 1), got "
                       f"{self.held_out_fraction!r}.")
    if self.eval_windows < 0:
      raise ValueError(f"--eval_windows must be >= 0, got {self.eval_windows!r}.")

  def pruning_window(self):
    begin = (int(0.25 * self.train_steps) if self.pruning_begin_step is None
             else self.pruning_begin_step)
    end = (int(0.75 * self.train_steps) if self.pruning_end_step is None
           else self.pruning_end_step)
    return begin, end


# --------------------------------------------------------------------------
# Models.


@keras.utils.register_keras_serializable(package="keras_rigl_examples")
class PositionEmbedding(L.Layer):
  """Adds a learned embedding of each position to a [batch, T, d] input."""

  def __init__(self, max_length, **kwargs):
    super().__init__(**kwargs)
    self.max_length = int(max_length)

  def build(self, input_shape):
    self.positions = self.add_weight(
        name="positions", shape=(self.max_length, int(input_shape[-1])),
        initializer=keras.initializers.RandomNormal(stddev=0.02))
    self.built = True

  def call(self, inputs):
    length = tf.shape(inputs)[1]
    return inputs + tf.cast(self.positions[:length], inputs.dtype)[tf.newaxis]

  def get_config(self):
    return dict(super().get_config(), max_length=self.max_length)


def gru_lm(embedding_dim=128, units=512, readout=(256, 128), sequence_length=None):
  """The paper's character GRU: embedding, GRU, readout layers, byte logits."""
  inputs = keras.Input((sequence_length,), dtype="int32", name="bytes")
  h = L.Embedding(text_data.VOCAB_SIZE, embedding_dim, name="embedding")(inputs)
  h = L.GRU(units, return_sequences=True, name="gru")(h)
  for index, size in enumerate(readout):
    h = L.Dense(int(size), activation="relu", name=f"readout{index + 1}")(h)
  logits = L.Dense(text_data.VOCAB_SIZE, name="logits")(h)
  return keras.Model(inputs, logits, name="char_gru")


def transformer_lm(d_model=128, num_layers=2, num_heads=4, ff_dim=512, max_length=64):
  """A small pre-norm decoder-only Transformer over bytes (causal attention)."""
  inputs = keras.Input((max_length,), dtype="int32", name="bytes")
  h = L.Embedding(text_data.VOCAB_SIZE, d_model, name="embedding")(inputs)
  h = PositionEmbedding(max_length, name="positions")(h)
  for i in range(num_layers):
    a = L.LayerNormalization(name=f"block{i}_norm1")(h)
    a = L.MultiHeadAttention(num_heads, d_model // num_heads, name=f"block{i}_attention")(
        a, a, use_causal_mask=True)
    h = L.Add(name=f"block{i}_add1")([h, a])
    f = L.LayerNormalization(name=f"block{i}_norm2")(h)
    f = L.Dense(ff_dim, activation="relu", name=f"block{i}_ff1")(f)
    f = L.Dense(d_model, name=f"block{i}_ff2")(f)
    h = L.Add(name=f"block{i}_add2")([h, f])
  h = L.LayerNormalization(name="final_norm")(h)
  logits = L.Dense(text_data.VOCAB_SIZE, name="logits")(h)
  return keras.Model(inputs, logits, name="char_transformer")


def build_dense(config, width=1.0):
  """The dense model of `config`, its hidden sizes scaled by `width`."""
  scale = lambda n: max(1, int(round(n * width)))
  if config.model == "gru":
    return gru_lm(config.embedding_dim, scale(config.gru_units),
                  tuple(scale(n) for n in config.readout), config.sequence_length)
  heads = config.num_heads
  d_model = max(heads, int(round(config.d_model * width / heads)) * heads)
  return transformer_lm(d_model, config.num_layers, heads, scale(config.ff_dim),
                        config.sequence_length)


def _is_embedding(layer):
  return isinstance(layer, (L.Embedding, PositionEmbedding))


def sparse_weight_count(model):
  """Kernel weights of the layers the sparse methods make sparse."""
  return sum(r.size for r in kr.sparsity_report(model) if r.name != "embedding")


def small_dense_width(config):
  """Width factor whose dense model has the sparse model's non-zero count."""
  target = sparse_weight_count(build_dense(config)) * (1.0 - config.sparsity)
  low, high = 0.0, 1.0  # The count grows with the width: bisect.
  for _ in range(12):
    middle = (low + high) / 2
    if sparse_weight_count(build_dense(config, middle)) < target:
      low = middle
    else:
      high = middle
  return high


def methods():
  """The registered methods this script can train (their models it builds)."""
  return tuple(name for name in registry.names()
               if registry.get(name).model in MODEL_KINDS)


def build_model(config):
  """(model, small_dense_width or None) for `config`; masks are in place."""
  keras.utils.set_random_seed(config.seed)
  method = registry.get(config.method)
  if method.model == "dense":
    return build_dense(config), None
  if method.model == "small_dense":
    width = small_dense_width(config)
    keras.utils.set_random_seed(config.seed)
    return build_dense(config, width), width
  model = build_dense(config)
  return kr.sparsify(
      model, config.sparsity, distribution=config.distribution, exclude=_is_embedding,
      seed=config.seed, mask_init=method.mask_init), None


def make_scheduler(config, train):
  """The method's callback (from its registry entry's `arguments`), or None."""
  begin, end = config.pruning_window()
  end_step = config.train_steps if config.end_step is None else config.end_step
  # The registry builds callbacks from a recipe config and plan: ours, as one.
  recipe = recipe_configs.Config(
      model=config.model, dataset="text", method=config.method,
      update_freq=config.update_freq, drop_fraction=config.drop_fraction,
      drop_fraction_schedule=config.drop_fraction_schedule)
  plan = types.SimpleNamespace(begin_step=0, end_step=end_step, pruning_begin_step=begin,
                               pruning_end_step=end, pruning_freq=config.update_freq)
  return registry.get(config.method).make_scheduler(recipe, plan, train, config.seed)


# --------------------------------------------------------------------------
# Training.


class History(keras.callbacks.Callback):
  """Per-epoch step, training bits per character and sparsity; survives resume."""

  def __init__(self, path=None):
    super().__init__()
    self.path = path
    self.entries = []

  def on_train_begin(self, logs=None):
    step = int(self.model.optimizer.iterations.numpy())  # After BackupAndRestore.
    if self.path and os.path.exists(self.path):
      with open(self.path) as f:
        self.entries = [e for e in json.load(f) if e["step"] <= step]

  def on_epoch_end(self, epoch, logs=None):
    logs = logs or {}
    entry = {"epoch": epoch + 1, "step": int(self.model.optimizer.iterations.numpy()),
             "train_bpc": float(logs.get("loss", float("nan"))) / math.log(2),
             "sparsity": float(kr.sparsity_report(self.model).sparsity)}
    self.entries.append(entry)
    if self.path:
      with open(self.path, "w") as f:
        json.dump(self.entries, f)


def _loss():
  return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def evaluate_bpc(model, data, config):
  """Held-out bits per character (mean cross-entropy in bits)."""
  windows = config.eval_windows or None
  held_out = text_data.char_lm_dataset(data, config.sequence_length, config.batch_size,
                                       max_windows=windows)
  loss = model.evaluate(held_out, verbose=0, return_dict=True)["loss"]
  return float(loss) / math.log(2)


def load_corpus(config):
  """The corpus of `config`, checked to hold a batch in each split."""
  corpus = text_data.load_corpus(config.data_dir, config.held_out_fraction)
  for name, data in (("training", corpus.train), ("held-out", corpus.held_out)):
    if text_data.num_windows(data, config.sequence_length) < config.batch_size:
      raise ValueError(
          f"The {name} text ({len(data)} bytes) is too short for one batch of "
          f"{config.batch_size} sequences of {config.sequence_length} bytes; lower "
          "--batch_size/--sequence_length or use more text.")
  return corpus


def run(config):
  """Trains `config`; returns the report dict (also written to model_dir)."""
  started = time.time()
  config.check()
  corpus = load_corpus(config)
  if config.model_dir:
    os.makedirs(config.model_dir, exist_ok=True)
  model, width = build_model(config)
  train = text_data.char_lm_dataset(corpus.train, config.sequence_length,
                                    config.batch_size, shuffle=True, seed=config.seed,
                                    repeat=True)
  model.compile(keras.optimizers.Adam(config.learning_rate), _loss())
  scheduler = make_scheduler(config, train)
  history = History(os.path.join(config.model_dir, "history.json")
                    if config.model_dir else None)
  callbacks = []
  if config.model_dir:
    callbacks.append(keras.callbacks.BackupAndRestore(
        os.path.join(config.model_dir, "backup"), delete_checkpoint=False))
  if scheduler is not None:
    callbacks.append(scheduler)
  callbacks.append(history)
  if config.model_dir and importlib.util.find_spec("tensorboard") is not None:
    callbacks.append(keras.callbacks.TensorBoard(
        os.path.join(config.model_dir, "logs"), write_graph=False, profile_batch=0))
  epochs = math.ceil(config.train_steps / config.steps_per_epoch)
  # Equal epochs (the last one may run a little past train_steps: rounded up).
  steps_per_epoch = math.ceil(config.train_steps / epochs)
  model.fit(train, epochs=epochs, steps_per_epoch=steps_per_epoch,
            callbacks=callbacks, verbose=config.verbose)
  steps = int(model.optimizer.iterations.numpy())
  held_out_bpc = evaluate_bpc(model, corpus.held_out, config)
  report = build_report(model, config, steps, held_out_bpc, width, history.entries,
                        corpus, time.time() - started)
  if config.model_dir:
    with open(os.path.join(config.model_dir, "report.json"), "w") as f:
      json.dump(report, f, indent=1)
    save_figure(report, os.path.join(config.model_dir, "report.png"))
  return report


def build_report(model, config, steps, held_out_bpc, width, history, corpus, seconds):
  """The numbers a run ends with, as a JSON-friendly dict."""
  flops = kr.count_flops(model)
  begin, end = config.pruning_window()
  train_flops = kr.training_flops(
      flops, config.method, steps=steps, batch_size=config.batch_size,
      update_freq=config.update_freq,
      end_step=config.train_steps if config.end_step is None else config.end_step,
      pruning_begin_step=begin, pruning_end_step=end,
      pruning_frequency=config.update_freq)
  table = kr.sparsity_report(model)
  rows = [dataclasses.asdict(r) | {"sparsity": r.sparsity} for r in table]
  sparse_rows = [r for r in table if r.name != "embedding"]
  return {
      "config": {k: (list(v) if isinstance(v, tuple) else v)
                 for k, v in dataclasses.asdict(config).items()},
      "keras": kr.keras_flavour, "steps": steps, "held_out_bpc": held_out_bpc,
      "train_bpc": history[-1]["train_bpc"] if history else None,
      "small_dense_width": width,
      "params": int(model.count_params()),
      "sparse_layers": {"params": sum(r.size for r in sparse_rows),
                        "nnz": sum(r.nnz for r in sparse_rows)},
      "sparsity": float(table.sparsity), "sparsity_table": rows,
      "sparsity_table_text": table.table(),
      "flops": {"dense_per_sequence": flops.dense, "sparse_per_sequence": flops.sparse,
                "ratio": flops.ratio, "sequence_length": flops.sequence_length,
                "per_character": flops.sparse / config.sequence_length,
                "table": flops.table()},
      "training_flops": train_flops,
      "history": history,
      "corpus": {"directory": corpus.directory, "files": len(corpus.files),
                 "train_bytes": int(len(corpus.train)),
                 "held_out_bytes": int(len(corpus.held_out))},
      "seconds": seconds,
  }


def format_report(report):
  c = report["config"]
  lines = [
      f"{c['model']} {c['method']} (sparsity {c['sparsity']}, {c['distribution']}), "
      f"{report['steps']} steps of {c['batch_size']}x{c['sequence_length']} bytes, "
      f"{report['keras']}",
      f"held-out bits per character: {report['held_out_bpc']:.4f}",
      f"training FLOPs: {report['training_flops']:.4g}   inference FLOPs per sequence: "
      f"{report['flops']['sparse_per_sequence']:.4g} "
      f"({report['flops']['ratio']:.3f}x dense)",
      "", report["sparsity_table_text"], "", report["flops"]["table"],
  ]
  if report["small_dense_width"] is not None:
    lines.insert(2, f"small_dense width factor: {report['small_dense_width']:.3f}")
  return "\n".join(lines)


def save_figure(report, path):
  """report.png: training bits per character and per-layer sparsity."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  history = report["history"]
  left.plot([h["step"] for h in history], [h["train_bpc"] for h in history],
            marker=".", label="training")
  left.axhline(report["held_out_bpc"], color="tab:red", linestyle="--",
               label=f"held-out (end): {report['held_out_bpc']:.3f}")
  left.set_xlabel("step")
  left.set_ylabel("bits per character")
  left.legend()
  rows = report["sparsity_table"]
  labels = [f"{r['name']}/{r['weight']}" for r in rows]
  right.barh(labels, [r["sparsity"] for r in rows])
  right.set_xlim(0, 1)
  right.set_xlabel("sparsity")
  right.invert_yaxis()
  c = report["config"]
  fig.suptitle(f"{c['model']} / {c['method']}: {report['held_out_bpc']:.3f} bits/char, "
               f"{report['flops']['ratio']:.2f}x dense FLOPs")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


# --------------------------------------------------------------------------
# Flags.

FLAGS = flags.FLAGS


def define_flags():
  """Defines the flags (not at import: examples/train.py has flags of the same
  names, and tests import both)."""
  defaults = LMConfig()
  flags.DEFINE_enum("model", defaults.model, MODELS, "GRU (the paper's) or a small Transformer.")
  flags.DEFINE_enum("method", defaults.method, methods(),
                    "Training method (any registered method of a model kind this "
                    "script builds).")
  flags.DEFINE_float("sparsity", defaults.sparsity, "Sparsity of the sparse kernels, in [0, 1).")
  flags.DEFINE_enum("distribution", defaults.distribution, DISTRIBUTIONS,
                    "How sparsity spreads over layers (the paper: uniform).")
  flags.DEFINE_integer("embedding_dim", defaults.embedding_dim, "GRU model: byte embedding size.")
  flags.DEFINE_integer("gru_units", defaults.gru_units, "GRU model: state size.")
  flags.DEFINE_list("readout", [str(n) for n in defaults.readout],
                    "GRU model: sizes of the readout Dense layers.")
  flags.DEFINE_integer("d_model", defaults.d_model, "Transformer: model width.")
  flags.DEFINE_integer("num_layers", defaults.num_layers, "Transformer: blocks.")
  flags.DEFINE_integer("num_heads", defaults.num_heads, "Transformer: attention heads.")
  flags.DEFINE_integer("ff_dim", defaults.ff_dim, "Transformer: feed-forward width.")
  flags.DEFINE_integer("sequence_length", defaults.sequence_length, "Bytes per sequence.")
  flags.DEFINE_integer("batch_size", defaults.batch_size, "Sequences per step.")
  flags.DEFINE_integer("train_steps", defaults.train_steps, "Training steps.")
  flags.DEFINE_integer("steps_per_epoch", defaults.steps_per_epoch,
                       "Steps per Keras epoch (logging, checkpoint and resume unit).")
  flags.DEFINE_float("learning_rate", defaults.learning_rate, "Adam learning rate.")
  flags.DEFINE_integer("update_freq", defaults.update_freq,
                       "Steps between mask updates (RigL/SET) and pruning steps.")
  flags.DEFINE_float("drop_fraction", defaults.drop_fraction, "Initial drop fraction.")
  flags.DEFINE_enum("drop_fraction_schedule", defaults.drop_fraction_schedule,
                    list(SCHEDULES), "Decay of the drop fraction.")
  flags.DEFINE_integer("end_step", None, "Last mask update step (default: the end).")
  flags.DEFINE_integer("pruning_begin_step", None, "Pruning start (default: 25% of the run).")
  flags.DEFINE_integer("pruning_end_step", None, "Pruning end (default: 75% of the run).")
  flags.DEFINE_integer("seed", defaults.seed, "Seed of weights, masks and data order.")
  flags.DEFINE_string("data_dir", None, "Folder of text files (default: the fortunes "
                      f"package, {text_data.DEFAULT_CORPUS_DIR}).")
  flags.DEFINE_float("held_out_fraction", defaults.held_out_fraction,
                     "Tail fraction of every file held out.")
  flags.DEFINE_integer("eval_windows", defaults.eval_windows,
                       "Held-out sequences evaluated at the end (0: all).")
  flags.DEFINE_string("model_dir", None, "Checkpoints (resume), TensorBoard logs, "
                      "report.json and report.png.")
  flags.DEFINE_enum("verbose", "1", ["0", "1", "2"], "Keras fit verbosity (1: progress bar).")


def config_from_flags(flag_values=None):
  """An LMConfig from parsed flags (ValueError naming the flag if bad)."""
  flag_values = FLAGS if flag_values is None else flag_values
  try:
    readout = tuple(int(n) for n in flag_values.readout)
  except ValueError:
    raise ValueError(f"--readout must be integers, got {flag_values.readout!r}.") from None
  config = LMConfig(**{f.name: getattr(flag_values, f.name)
                       for f in dataclasses.fields(LMConfig)
                       if f.name not in ("readout", "verbose")},
                    readout=readout, verbose=int(flag_values.verbose))
  config.check()
  return config


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    config = config_from_flags()
    load_corpus(config)  # Before building anything.
  except (ValueError, text_data.CorpusNotFoundError) as error:
    print(f"train_lm.py: error: {error}", file=sys.stderr)
    sys.exit(2)
  report = run(config)
  print(format_report(report))


if __name__ == "__main__":
  define_flags()
  app.run(main)
