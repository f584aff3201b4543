"""The ablation studies on one tiny trained run: rows agree with plain evaluations and resume."""

import json

import numpy as np
import pytest
from PIL import Image

from fmjax import main as fm_main
from fmjax.core import plots
from fmjax.studies import ablations as studies
from fmjax.studies.ablations.aggregators import aggregator_settings
from fmjax.studies.ablations.compute import compute_settings

from conftest import tiny_config


def test_settings_parsing():
  paper = compute_settings("paper")
  assert len(paper) == 30 and paper[0] == {"group": "fix K=5", "num_seeds": 5, "num_times": 2}
  assert [s["num_seeds"] * s["num_times"] for s in paper if s["group"] == "K=T"][-1] == 400
  assert compute_settings("2x3, 4x4") == [{"group": "grid", "num_seeds": 2, "num_times": 3},
                                                   {"group": "K=T", "num_seeds": 4, "num_times": 4}]
  with pytest.raises(ValueError, match="is not KxT"):
    compute_settings("5by5")
  assert aggregator_settings("min,q0.2") == [{"aggregator": "min", "quantile": None},
                                                      {"aggregator": "quantile", "quantile": 0.2}]
  with pytest.raises(ValueError, match="median"):
    aggregator_settings("median")


def test_studies_agree_with_evaluate_and_resume(tmp_path, capsys):
  run = str(tmp_path)
  base = {"mesh.num_devices": 2, "train.keep_checkpoints": 5}
  evaluated = fm_main.run(tiny_config(**base), run, "train_and_evaluate")  # K=T=2, min, step 4
  compute = fm_main.run(tiny_config(**base, **{"study.name": "compute", "study.compute": "1x1,2x2"}),
                        run, "study")
  assert [r["label"] for r in compute["rows"]] == ["K=1 T=1", "K=2 T=2"]
  assert compute["rows"][1]["mean"] == pytest.approx(evaluated.mean.as_dict(), abs=1e-6, nan_ok=True)
  aggregators = fm_main.run(tiny_config(**base, **{"study.name": "aggregators",
                                                   "study.aggregators": "min,q0.5"}), run, "study")
  assert [r["label"] for r in aggregators["rows"]] == ["min", "q0.5"]
  assert aggregators["rows"][0]["mean"] == pytest.approx(evaluated.mean.as_dict(), abs=1e-6, nan_ok=True)
  checkpoints = fm_main.run(tiny_config(**base, **{"study.name": "checkpoints"}), run, "study")
  assert [r["step"] for r in checkpoints["rows"]] == [2, 4]
  assert checkpoints["rows"][1]["mean"] == pytest.approx(evaluated.mean.as_dict(), abs=1e-6, nan_ok=True)
  assert checkpoints["rows"][0]["mean"]["pixel_auroc"] != checkpoints["rows"][1]["mean"]["pixel_auroc"]
  methods = fm_main.run(tiny_config(**base, **{"study.name": "methods", "evaluate.dflow.iterations": 3}),
                        run, "study")
  assert [r["label"] for r in methods["rows"]] == ["flow_mismatch", "reconflow", "dflow"]
  assert methods["rows"][0]["mean"] == pytest.approx(evaluated.mean.as_dict(), abs=1e-6, nan_ok=True)
  assert all(0 <= r["mean"]["pixel_auroc"] <= 1 for r in methods["rows"])
  assert [r["method"] for r in methods["rows"]] == ["flow_mismatch", "reconflow", "dflow"]
  assert methods["rows"][2]["mean"]["pixel_auroc"] != methods["rows"][0]["mean"]["pixel_auroc"]
  # RADAR joins the same study: the finished rows are kept, its row equals a plain evaluation.
  with_radar = fm_main.run(tiny_config(**base, **{"study.name": "methods",
                                                  "study.methods": "flow_mismatch,radar"}), run, "study")
  assert [r["label"] for r in with_radar["rows"]] == ["flow_mismatch", "radar"]
  radar_eval = fm_main.run(tiny_config(**base, **{"evaluate.method": "radar"}), run, "evaluate")
  assert with_radar["rows"][1]["mean"] == pytest.approx(radar_eval.mean.as_dict(), abs=1e-6, nan_ok=True)
  assert with_radar["rows"][1]["method_options"] == {"t": 0.5, "edge_filter": False,
                                                     "image_score": "top1"}
  for name, n in (("compute", 2), ("aggregators", 2), ("checkpoints", 2), ("methods", 2)):
    table = (tmp_path / "studies" / name / "results.md").read_text()
    assert sum(l.startswith("| ") for l in table.splitlines()) == n + 1  # header + rows
    assert (tmp_path / "studies" / name / "plot.png").stat().st_size > 1000
  # Running a finished study again recomputes nothing; a new setting adds one row.
  capsys.readouterr()
  again = fm_main.run(tiny_config(**base, **{"study.name": "compute", "study.compute": "2x2,1x1,2x1"}),
                      run, "study")
  progress = [l for l in capsys.readouterr().out.splitlines() if l.startswith("study compute:")]
  assert progress == ["study compute: 3/3 K=2 T=1"]
  assert [r["label"] for r in again["rows"]] == ["K=2 T=2", "K=1 T=1", "K=2 T=1"]
  saved = json.loads((tmp_path / "studies" / "compute" / "results.json").read_text())
  assert len(saved["rows"]) == 3
  with pytest.raises(ValueError, match=r"study.steps \[3\] are not saved .* saved: \[2, 4\]"):
    fm_main.run(tiny_config(**base, **{"study.name": "checkpoints", "study.steps": "3"}), run, "study")


def test_study_configs_name_the_study():
  import importlib.util
  import os
  spec = importlib.util.spec_from_file_location(
      "studies_config", os.path.join(os.path.dirname(__file__), "..", "configs", "studies.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for name in studies.STUDIES:
    assert module.get_config(name).study.name == name


def test_undefined_metrics_are_strict_json_and_dashes(tmp_path):
  row = {"group": "K=T", "label": "K=1 T=1", "num_seeds": 1, "num_times": 1,
         "images_per_s": float("nan"), "mean": {"image_auroc": 0.5, "pixel_aupro": float("nan")}}
  path = tmp_path / "results.json"
  studies._write_rows(str(path), "compute", [row])
  saved = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
  assert saved["rows"][0]["mean"]["pixel_aupro"] is None and saved["rows"][0]["images_per_s"] is None
  for rows in ([row], saved["rows"]):  # in memory (NaN) and read back (None)
    table = studies.results_table("compute", rows)
    assert "| K=T: K=1 T=1 | 1 | 50.0 | - | - |" in table
    fig = studies.study_plot("compute", rows)  # nothing to draw on the speed axis: still a figure
    plots.save(fig, str(tmp_path / "plot.png"))
    assert Image.open(tmp_path / "plot.png").size == plots.pixel_size(fig)


def test_seeds_study_reports_the_spread(tmp_path):
  run = str(tmp_path)
  evaluated = fm_main.run(tiny_config(), run, "train_and_evaluate")  # evaluate.seed = 0
  result = fm_main.run(tiny_config(**{"study.name": "seeds", "study.seeds": "0,5,9"}), run, "study")
  assert [r["label"] for r in result["rows"]] == ["seed 0", "seed 5", "seed 9"]
  assert result["rows"][0]["mean"] == pytest.approx(evaluated.mean.as_dict(), abs=1e-6, nan_ok=True)
  pixel = np.array([r["mean"]["pixel_auroc"] for r in result["rows"]])
  assert len(set(pixel)) == 3  # the seeds really change the scores
  spread = result["spread"]["pixel_auroc"]
  assert spread["mean"] == pytest.approx(pixel.mean()) and spread["std"] == pytest.approx(pixel.std(ddof=1))
  assert (spread["min"], spread["max"]) == (pixel.min(), pixel.max())
  table = (tmp_path / "studies" / "seeds" / "results.md").read_text()
  assert "| **std** over 3 seeds | | " in table and f"{100 * spread['std']:.2f}" in table
  saved = json.loads((tmp_path / "studies" / "seeds" / "results.json").read_text())
  assert saved["spread"]["pixel_auroc"]["std"] == pytest.approx(spread["std"])
  with pytest.raises(ValueError, match="at least two distinct seeds"):
    fm_main.run(tiny_config(**{"study.name": "seeds", "study.seeds": "3"}), run, "study")


def test_pooling_study_trains_the_other_kind_and_compares(tmp_path, capsys):
  run = str(tmp_path / "run")
  conditional = fm_main.run(tiny_config(), run, "train_and_evaluate")
  config = tiny_config(**{"study.name": "pooling"})
  result = fm_main.run(config, run, "study")
  assert [r["model"] for r in result["rows"]] == ["conditional", "pooled"]
  assert result["rows"][0]["mean"] == pytest.approx(conditional.mean.as_dict(), abs=1e-6, nan_ok=True)
  # The pooled model equals one trained and evaluated on its own with the same recipe.
  pooled = fm_main.run(tiny_config(**{"data.class_conditional": False}), str(tmp_path / "pooled"),
                       "train_and_evaluate")
  assert result["rows"][1]["mean"] == pytest.approx(pooled.mean.as_dict(), abs=1e-6, nan_ok=True)
  assert result["rows"][1]["mean"] != result["rows"][0]["mean"]
  assert result["rows"][1]["checkpoint_step"] == 4
  out = tmp_path / "run" / "studies" / "pooling"
  assert (tmp_path / "run" / "studies" / "pooling-runs" / "pooled" / "checkpoints").is_dir()
  table = (out / "results.md").read_text()
  body = [l for l in table.splitlines() if l.startswith("| ") and not l.startswith("| Class")]
  assert [l.split(" | ")[0][2:] for l in body] == ["weave", "brushed", "tiles", "**Mean**"]
  assert len(body[-1].split(" | ")) == 1 + 2 * 8  # the seven and AUPIMO per model
  assert (out / "plot.png").stat().st_size > 1000
  # A second run trains and scores nothing again.
  capsys.readouterr()
  fm_main.run(config, run, "study")
  assert not [l for l in capsys.readouterr().out.splitlines() if l.startswith("study pooling: 1/")]
  # A conditional checkpoint is not evaluated as a pooled model.
  from fmjax.train.checkpoint import CheckpointMismatchError
  with pytest.raises(CheckpointMismatchError, match="class_conditional: checkpoint has True"):
    fm_main.run(tiny_config(**{"data.class_conditional": False}), run, "evaluate")


def test_rows_are_reused_only_for_the_same_checkpoint_and_scorer(tmp_path, capsys):
  run = str(tmp_path)
  fm_main.run(tiny_config(), run, "train")  # step 4
  study = {"study.name": "compute", "study.compute": "1x1"}

  def scored(**overrides):
    """The study's row and the settings it scored anew in this run."""
    capsys.readouterr()
    result = fm_main.run(tiny_config(**study, **overrides), run, "study")
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("study compute:")]
    return result["rows"][0], lines

  row, lines = scored()
  assert lines == ["study compute: 1/1 K=1 T=1"] and row["checkpoint_step"] == 4
  assert scored()[1] == []  # nothing changed: reused
  # Another aggregator, another scoring seed, or the raw parameters: scored again.
  for overrides, key, value in [({"evaluate.flow_mismatch.aggregator": "mean"}, "method_options",
                                 {"num_seeds": 1, "num_times": 1, "aggregator": "mean",
                                  "quantile": None}),
                                ({"evaluate.seed": 3}, "seed", 3),
                                ({"evaluate.use_ema": False}, "use_ema", False)]:
    row, lines = scored(**overrides)
    assert lines == ["study compute: 1/1 K=1 T=1"] and row[key] == value, overrides
  # Trained further: the step-4 row is stale and replaced by the step-6 one.
  fm_main.run(tiny_config(**{"train.num_steps": 6}), run, "train")
  row, lines = scored(**{"train.num_steps": 6})
  assert lines == ["study compute: 1/1 K=1 T=1"] and row["checkpoint_step"] == 6
  saved = json.loads((tmp_path / "studies" / "compute" / "results.json").read_text())
  assert [r["checkpoint_step"] for r in saved["rows"]] == [6]
  # With the checkpoints gone, no row is reported.
  import shutil
  shutil.rmtree(tmp_path / "checkpoints")
  from fmjax.core.errors import MissingCheckpointError
  with pytest.raises(MissingCheckpointError, match="No checkpoints in"):
    fm_main.run(tiny_config(**study, **{"train.num_steps": 6}), run, "study")
