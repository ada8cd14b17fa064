"""Imports TensorFlow without its screen of C++ start-up log lines.

TensorFlow 2.21 prints oneDNN / CUDA / CPU-feature lines while it loads, some
before its log level is read (so ``TF_CPP_MIN_LOG_LEVEL`` alone does not hide
them). Unless the user asked for them (``--tf_verbose`` or their own
``TF_CPP_MIN_LOG_LEVEL``), the entry points import TensorFlow with the
process's stderr sent to /dev/null, list the physical devices there too (the
CUDA probe logs then), and keep ``TF_CPP_MIN_LOG_LEVEL=2`` for the rest of
the run. Errors raised while importing are still shown: stderr is back
before Python prints them.
"""

import os
import sys

VERBOSE_FLAGS = ("--tf_verbose", "--tf_verbose=true", "--tf_verbose=True",
                 "--tf_verbose=1")


def wants_tf_logs(argv):
  """True when the command line asks for TensorFlow's C++ logs.

  Example:
  >>> wants_tf_logs(["train.py", "--tf_verbose"]), wants_tf_logs(["train.py"])
  (True, False)
  """
  return any(arg in VERBOSE_FLAGS for arg in argv[1:])


def import_tensorflow(verbose=False):
  """`import tensorflow`, quietly unless `verbose` or TF_CPP_MIN_LOG_LEVEL is set.

  Example:
  >>> import_tensorflow().__name__
  'tensorflow'
  """
  if verbose or "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf
  os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    # Physical devices only: logical ones (and multi-worker collectives)
    # can still be configured afterwards.
    tf.config.list_physical_devices("GPU")
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)
  return tf
