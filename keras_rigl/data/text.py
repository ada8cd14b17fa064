"""Byte-level text corpora for character language models (offline).

The default corpus is the English text of the Debian package ``fortunes``
(``/usr/share/games/fortunes``: plain-text "cookie" files, about 2.5 MB of
quotations, jokes and poems; ``make corpus`` installs it). Any folder of text
files works through ``data_dir``.

Text is read as raw bytes: the vocabulary is the 256 byte values, as in the
RigL paper's character-level model (no tokenizer, nothing to download).

Split (deterministic, no randomness): every file is cut at
``1 - held_out_fraction`` of its length; the heads form the training text and
the tails the held-out text, both in sorted file order. Every topic of a
folder is in both splits, and no window straddles the two.

Pure numpy / tf.data; nothing here imports Keras.

Example:

>>> import os, tempfile
>>> from keras_rigl.data import text
>>> folder = tempfile.mkdtemp()
>>> with open(os.path.join(folder, "a.txt"), "w") as f:
...   _ = f.write("the quick brown fox jumps over the lazy dog. " * 20)
>>> corpus = text.load_corpus(folder)
>>> len(corpus.train), len(corpus.held_out)
(810, 90)
>>> batches = text.char_lm_dataset(corpus.train, sequence_length=16, batch_size=4)
>>> x, y = next(iter(batches))
>>> x.shape, y.shape, bool((x[:, 1:] == y[:, :-1]).numpy().all())
(TensorShape([4, 16]), TensorShape([4, 16]), True)
"""

import dataclasses
import os

import numpy as np
from keras_rigl.backend import tf

from keras_rigl.data.common import DataNotFoundError

DEFAULT_CORPUS_DIR = "/usr/share/games/fortunes"
VOCAB_SIZE = 256
# strfile(1) indexes and the .u8 symlinks of the fortunes package.
_SKIP_SUFFIXES = (".dat", ".u8", ".gz", ".zip", ".png", ".jpg", ".pdf")

MISSING_HELP = (
    "Install the Debian package with `make corpus` (or `apt-get install "
    "fortunes`: plain-text files in /usr/share/games/fortunes), or pass "
    "--data_dir pointing at a folder of text files.")


class CorpusNotFoundError(DataNotFoundError):
  """No text corpus where one was expected; the message says how to get it."""


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A byte corpus split into training and held-out text.

  Attributes:
    train: uint8 array of the training bytes.
    held_out: uint8 array of the held-out bytes.
    files: the files read, in order.
    directory: the folder they came from.
  """
  train: np.ndarray
  held_out: np.ndarray
  files: tuple
  directory: str


def text_files(directory):
  """Sorted paths of the text files under `directory` (recursively).

  Skips hidden files, symlinks (the fortunes ``.u8`` links) and index or
  binary files by suffix (``.dat``, ...), and any file with NUL bytes in its
  first 4 KB.
  """
  paths = []
  for root, dirs, names in os.walk(directory):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for name in sorted(names):
      path = os.path.join(root, name)
      if (name.startswith(".") or os.path.islink(path) or
          name.lower().endswith(_SKIP_SUFFIXES)):
        continue
      with open(path, "rb") as f:
        if b"\0" in f.read(4096):
          continue
      paths.append(path)
  return paths


def load_corpus(data_dir=None, held_out_fraction=0.1):
  """Reads every text file of `data_dir` (default: the fortunes package).

  Args:
    data_dir: a folder of text files; None for `DEFAULT_CORPUS_DIR`.
    held_out_fraction: the tail fraction of every file held out, in (0, 1).

  Returns:
    A `Corpus`.

  Raises:
    CorpusNotFoundError: the folder does not exist or holds no text.
    ValueError: a bad `held_out_fraction`.
  """
  if not isinstance(held_out_fraction, (int, float)) or not 0 < held_out_fraction < 1:
    raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction!r}.")
  directory = data_dir or DEFAULT_CORPUS_DIR
  if not os.path.isdir(directory):
    raise CorpusNotFoundError(f"No text corpus at {directory!r}. {MISSING_HELP}")
  files = text_files(directory)
  train, held_out = [], []
  for path in files:
    with open(path, "rb") as f:
      data = f.read()
    cut = int(round(len(data) * (1.0 - held_out_fraction)))
    train.append(data[:cut])
    held_out.append(data[cut:])
  train_bytes, held_out_bytes = b"".join(train), b"".join(held_out)
  if not files or not train_bytes or not held_out_bytes:
    raise CorpusNotFoundError(
        f"{directory!r} holds no text files (or too little text to split). "
        f"{MISSING_HELP}")
  return Corpus(train=np.frombuffer(train_bytes, dtype=np.uint8),
                held_out=np.frombuffer(held_out_bytes, dtype=np.uint8),
                files=tuple(files), directory=directory)


def num_windows(data, sequence_length):
  """How many non-overlapping (input, target) windows `data` holds."""
  return max(0, (len(data) - 1) // int(sequence_length))


def char_lm_dataset(data, sequence_length, batch_size, shuffle=False, seed=0,
                    repeat=False, max_windows=None):
  """(inputs, targets) batches of byte windows; targets are inputs shifted by one.

  Args:
    data: uint8 array (e.g. ``Corpus.train``).
    sequence_length: bytes per example.
    batch_size: examples per batch (the last partial batch is dropped).
    shuffle: shuffle the windows (seeded; a new order every epoch).
    seed: the shuffle seed.
    repeat: repeat forever (for `fit` with ``steps_per_epoch``).
    max_windows: use only the first windows (e.g. a quick evaluation).

  Returns:
    A `tf.data.Dataset` of int32 ``([batch, T], [batch, T])``.
  """
  sequence_length, batch_size = int(sequence_length), int(batch_size)
  if sequence_length < 1 or batch_size < 1:
    raise ValueError("sequence_length and batch_size must be positive, got "
                     f"{sequence_length} and {batch_size}.")
  count = num_windows(data, sequence_length)
  if max_windows is not None:
    count = min(count, int(max_windows))
  if count < batch_size:
    raise ValueError(
        f"The text ({len(data)} bytes) holds {count} windows of "
        f"{sequence_length + 1} bytes, fewer than one batch of {batch_size}; "
        "use more text, a shorter sequence_length or a smaller batch_size.")
  data = np.asarray(data, dtype=np.int32)
  end = count * sequence_length
  inputs = data[:end].reshape(count, sequence_length)
  targets = data[1:end + 1].reshape(count, sequence_length)
  dataset = tf.data.Dataset.from_tensor_slices((inputs, targets))
  if shuffle:
    dataset = dataset.shuffle(count, seed=seed, reshuffle_each_iteration=True)
  if repeat:
    dataset = dataset.repeat()
  return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
