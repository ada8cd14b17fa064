"""Every row of the bad-input tables fails early, with the right type and a message that helps."""

import importlib
import pkgutil

import pytest

from tests import bad_inputs
from tests.bad_inputs import BadInput


def _rows():
  rows = []
  for info in pkgutil.iter_modules(bad_inputs.__path__):
    module = importlib.import_module(f"tests.bad_inputs.{info.name}")
    rows.extend(r for r in vars(module).get("ROWS", ()) if isinstance(r, BadInput))
  return rows


ROWS = _rows()


def test_row_names_are_unique():
  names = [row.name for row in ROWS]
  assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_bad_input_fails_clearly(row):
  with pytest.raises(row.error) as info:
    row.call()
  message = str(info.value).lower()
  missing = [s for s in row.says if s.lower() not in message]
  assert not missing, f"message {str(info.value)!r} does not mention {missing}"


def test_docs_list_every_row():
  """docs/errors.md is regenerated with `python tests/write_error_docs.py`."""
  from pathlib import Path  # pylint: disable=g-import-not-at-top
  text = (Path(__file__).resolve().parent.parent / "docs" / "errors.md").read_text()
  missing = [row.name for row in ROWS if f"`{row.name}`" not in text]
  assert not missing, f"docs/errors.md lacks {missing}: run python tests/write_error_docs.py"
