"""Tables of bad inputs: each row is a call that must fail early and clearly.

`tests/test_bad_inputs.py` walks every table and checks that each call raises
the expected exception type and that the message names both the parameter
and the fix. `docs/errors.md` lists the same rows for users. The tables live
in one module per area (API, schedulers, train.py flags).
"""

import dataclasses
from typing import Callable, Tuple, Type


@dataclasses.dataclass(frozen=True)
class BadInput:
  """One bad input.

  Attributes:
    name: short unique id, e.g. "sparsify/sparsity_above_one".
    call: a no-argument callable that must raise.
    error: the exception type it must raise (ValueError, TypeError, ...).
    says: substrings that must appear in the message (case-insensitive):
      the parameter's name and the words of the fix.
    what: one line for docs/errors.md: the mistake, as a user would make it.
  """
  name: str
  call: Callable[[], object]
  error: Type[BaseException]
  says: Tuple[str, ...]
  what: str
