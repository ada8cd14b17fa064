"""Thread-local recording of tensors built inside a `with` block.

RigL's gradient pass records the effective weights ``W * M`` that the
wrappers build (`wrapper.capture_effective_weights`) and the inputs/outputs of
compressed layers (`layers.base.capture_layer_io`). Both use `recording`: a
thread-local list, so each replica of a MirroredStrategy records its own, and
nested blocks put the outer list back when they end.
"""

import contextlib


@contextlib.contextmanager
def recording(local):
  """Sets ``local.records`` to a new list for the block and yields it.

  Example:
  >>> import threading
  >>> local = threading.local()
  >>> with recording(local) as records:
  ...   local.records.append("x")
  >>> records, getattr(local, "records", None)
  (['x'], None)
  """
  previous = getattr(local, "records", None)
  records = []
  local.records = records
  try:
    yield records
  finally:
    local.records = previous
