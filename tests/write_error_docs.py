"""Writes docs/errors.md from the bad-input tables: each row, its error and its message.

  python tests/write_error_docs.py          # from the repository root
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# pylint: disable=g-import-not-at-top,wrong-import-position
import collections
import pathlib
import re
import sys
import tempfile
import warnings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from tests.test_bad_inputs import ROWS

HEADER = """# Errors: bad inputs and what they get

Every row below is a mistake a user can make, the exception keras-rigl raises
for it and the message, produced by running the call
(`tests/test_bad_inputs.py` checks each row: exception type, and that the
message names the parameter and the fix; regenerate this page with
`python tests/write_error_docs.py`). All of them are raised before the
first training step: at construction, in `sparsify`/`export` before any work,
in a scheduler's `on_train_begin`, or in `examples/train.py` before the model is
built.
"""


def _message(row):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
      row.call()
    except row.error as error:  # pylint: disable=broad-except
      return type(error).__name__, _stable(type(error).__name__, " ".join(str(error).split()))
  return "(nothing raised)", ""


def _stable(kind, message):
  """The message without what changes from run to run, so the page only changes with it.

  Temporary paths become ``<tmp>``; an error raised while tracing a
  tf.function keeps its own message, not TensorFlow's "in user code" frames
  (file names and line numbers).
  """
  if message.startswith("in user code:") and f" {kind}: " in message:
    message = message[message.rindex(f" {kind}: ") + len(kind) + 3:]
  temp = re.escape(tempfile.gettempdir())
  return re.sub(temp + r"/(tmp|keras_rigl_bad_input_)[A-Za-z0-9_]+", "<tmp>", message)


def main():
  groups = collections.defaultdict(list)
  for row in ROWS:
    groups[row.name.split("/")[0]].append(row)
  lines = [HEADER]
  for group, rows in groups.items():
    lines.append(f"\n## {group}\n\n| mistake | error | message |\n|---|---|---|")
    for row in rows:
      kind, message = _message(row)
      message = message.replace("|", "\\|")
      lines.append(f"| {row.what} <br>`{row.name}` | {kind} | {message} |")
  path = pathlib.Path(__file__).resolve().parents[1] / "docs" / "errors.md"
  path.write_text("\n".join(lines) + "\n")
  print(f"wrote {path} ({len(ROWS)} rows)")


if __name__ == "__main__":
  main()
