"""The README's Python example runs as written (one epoch instead of three)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _example():
  blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
  assert blocks, "README.md has no ```python example"
  return blocks[0]


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
  code = _example()
  assert "epochs=3" in code
  monkeypatch.chdir(tmp_path)
  exec(compile(code.replace("epochs=3", "epochs=1"), str(README), "exec"), {})  # pylint: disable=exec-used
  printed = capsys.readouterr().out
  assert "total" in printed and "90.00%" in printed
  assert (tmp_path / "lenet_saved_model" / "saved_model.pb").exists()
