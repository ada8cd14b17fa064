"""The README's Python example runs as written (one epoch instead of three)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks():
  blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
  assert blocks, "README.md has no ```python example"
  return blocks


def _example():
  return _blocks()[0]


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
  code = _example()
  assert "epochs=3" in code
  monkeypatch.chdir(tmp_path)
  exec(compile(code.replace("epochs=3", "epochs=1"), str(README), "exec"), {})  # pylint: disable=exec-used
  printed = capsys.readouterr().out
  assert "total" in printed and "90.00%" in printed
  assert (tmp_path / "lenet_saved_model" / "saved_model.pb").exists()


def test_readme_compressed_redistribution_example_runs(tmp_path, monkeypatch):
  # The compressed-storage block continues the first example (model, train).
  first, second = _blocks()[:2]
  assert "capacity=1.25" in second
  monkeypatch.chdir(tmp_path)
  names = {}
  exec(compile(first.replace("epochs=3", "epochs=1"), str(README), "exec"), names)  # pylint: disable=exec-used
  exec(compile(second, str(README), "exec"), names)  # pylint: disable=exec-used
  from keras_rigl.layers.positions import active_count  # pylint: disable=g-import-not-at-top
  (_, counts), = names["redistribute"].count_history[-1:]
  weights = {w.name: w for l in names["roomy"].layers for w in getattr(l, "compressed_weights", ())}
  assert sorted(counts) == sorted(weights)
  # Counts moved between layers; the total stayed the initial one.
  assert sum(counts.values()) == sum(active_count(w.size, w.layer.target_sparsity)
                                     for w in weights.values())
