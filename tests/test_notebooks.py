"""The Colab notebooks run top to bottom on CPU with small settings (their parameters cell
overridden), and are committed clean: no outputs, no local paths, no placeholder URLs."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((REPO / "colabs").glob("*.ipynb"))
TINY = {"data.image_size": 16, "model.channels": 8, "model.num_res_blocks": 1,
        "model.channel_mult": (1, 2), "model.attention_rates": (2,), "model.head_channels": 8,
        "model.norm_groups": 4, "model.dtype": "float32", "train.batch_size": 8,
        "train.num_steps": 6, "train.checkpoint_every_steps": 6, "train.log_every_steps": 2,
        "evaluate.num_seeds": 2, "evaluate.num_times": 2, "evaluate.batch_size": 8,
        "evaluate.num_heatmaps": 2, "data.synthetic.num_train": 20,
        "data.synthetic.num_test_normal": 3, "data.synthetic.num_test_anomalous": 3}


def _execute(name: str, params: dict, cwd) -> nbformat.NotebookNode:
  nb = nbformat.read(REPO / "colabs" / name, as_version=4)
  (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
  cell.source += "\n# test overrides\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
  env_path = os.environ.get("PYTHONPATH", "")
  os.environ["PYTHONPATH"] = f"{REPO}{os.pathsep}{env_path}" if env_path else str(REPO)
  try:
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()  # raises CellExecutionError on the first failing cell
  finally:
    os.environ["PYTHONPATH"] = env_path
  return nb


def _text(nb) -> str:
  return "\n".join(o.get("text", "") + json.dumps(o.get("data", {}).get("text/plain", ""))
                   for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_committed_notebooks_are_clean():
  assert {p.name for p in NOTEBOOKS} >= {"quickstart.ipynb", "train_mvtec.ipynb",
                                         "explore_flow_mismatch.ipynb", "scaling_study.ipynb"}
  for path in NOTEBOOKS:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), path.name
    text = path.read_text()
    for bad in ("/work/", "/tmp/", "github.com/fmjax"):
      assert bad not in text, (path.name, bad)
    assert "print(jax.devices())" in code[1].source  # the set-up cell after the parameters


def test_quickstart_and_explore_notebooks_run(tmp_path):
  workdir = str(tmp_path / "run")
  nb = _execute("quickstart.ipynb", {"WORKDIR": workdir, "OVERRIDES": TINY}, tmp_path)
  assert "CpuDevice" in _text(nb) and "image/png" in json.dumps([c.outputs for c in nb.cells
                                                                 if c.cell_type == "code"])
  assert os.path.exists(os.path.join(workdir, "eval", "metrics.md"))
  shown = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
           if "text/html" in o.get("data", {})]
  assert any('<iframe class="fmjax-report" srcdoc="' in o["data"]["text/html"] and
             "fmjax-data" in o["data"]["text/html"] for o in shown)  # the report page inline
  nb = _execute("explore_flow_mismatch.ipynb",
                {"WORKDIR": workdir, "OVERRIDES": TINY, "CATEGORY": "tiles", "K": 2, "T": 3}, tmp_path)
  assert "largest difference from fmjax's heatmap" in _text(nb)


def test_train_mvtec_notebook_runs_on_an_mvtec_layout_folder(tmp_path):
  from fmjax.data.synthetic import make_synthetic_dataset
  data = make_synthetic_dataset(image_size=16, categories=("tiles",), num_train=10,
                                num_test_normal=2, num_test_anomalous=2)
  root = tmp_path / "data" / "widget"
  for i, im in enumerate(data.train_images):
    (root / "train" / "good").mkdir(parents=True, exist_ok=True)
    Image.fromarray(im).save(root / "train" / "good" / f"{i:03d}.png")
  for i, (im, label, mask) in enumerate(zip(data.test_images, data.test_labels, data.test_masks)):
    defect = "scratch" if label else "good"
    (root / "test" / defect).mkdir(parents=True, exist_ok=True)
    Image.fromarray(im).save(root / "test" / defect / f"{i:03d}.png")
    if label:
      (root / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
      Image.fromarray((255 * mask).astype(np.uint8)).save(
          root / "ground_truth" / defect / f"{i:03d}_mask.png")
  overrides = {k: v for k, v in TINY.items() if not k.startswith("data.synthetic")}
  nb = _execute("train_mvtec.ipynb", {"MOUNT_DRIVE": False, "DATA_ROOT": str(tmp_path / "data"),
                                      "CATEGORIES": "", "WORKDIR": str(tmp_path / "run"),
                                      "OVERRIDES": overrides}, tmp_path)
  text = _text(nb)
  assert "['widget']" in text and "calibrated" in text


def test_scaling_study_notebook_runs(tmp_path):
  workdir = str(tmp_path / "study")
  overrides = {**{k: v for k, v in TINY.items() if not k.startswith("train.")},
               "scaling.batch_sizes": "8,16", "scaling.base_batch_size": 8,
               "scaling.budget": 32, "scaling.warmup_examples": 8, "scaling.val_times": 2,
               "scaling.noise_scale_every": 2, "scaling.noise_scale_groups": 2,
               "train.checkpoint_every_steps": 4, "train.log_every_steps": 2}
  nb = _execute("scaling_study.ipynb", {"WORKDIR": workdir, "OVERRIDES": overrides}, tmp_path)
  results = json.loads(open(os.path.join(workdir, "scaling", "results.json")).read())
  assert [a["batch_size"] for a in results["arms"]] == [8, 16]
  assert all(a["examples"] == 32 for a in results["arms"])
  text = _text(nb)
  assert "critical batch size:" in text
  assert any('<iframe class="fmjax-report" srcdoc="' in o.get("data", {}).get("text/html", "")
             for c in nb.cells if c.cell_type == "code" for o in c.outputs)
  assert json.dumps([c.outputs for c in nb.cells if c.cell_type == "code"]).count("image/png") >= 5
