"""Size and speed of eval/report.html for a large test split, in headless Chromium.

Builds the page of an evaluation of `--images` test images (real 128x128 images from
../shared/data: the magnetic tiles, bottle and transistor test splits, repeated as needed, their
masks, and heatmaps made from them: smooth noise plus the defect region), writes it as
`--config` evaluations do, then opens it in Chromium and prints one JSON line: the page's size,
seconds to write it, and in the browser the milliseconds until the page is built and
interactive (`performance.now()` at its ready mark, from navigation start, the parse of the whole
file included), to draw the first cards once scrolled to, and for one slider move.

  python benchmarks/report_page.py --images 2000 --out /tmp/report_2000
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pathlib
import sys
import time

import numpy as np
from PIL import Image
from scipy import ndimage

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from fmjax.core import plots  # noqa: E402
from fmjax.data import AnomalyDataset  # noqa: E402
from fmjax.report import page  # noqa: E402
from fmjax.report.metrics import compute_metrics, mean_over_categories  # noqa: E402
from fmjax.report.records import EvalSettings, Evaluation, ImageResult, Metrics  # noqa: E402

DATA = REPO.parent / "shared" / "data"
SPLITS = (("mtd", "magnetic_tile"), ("mvtec", "bottle"), ("mvtec_images_only", "transistor"))


def real_test_images():
  """[(category, defect, path, image uint8 [128,128,3], mask [128,128] bool)] of the splits."""
  out = []
  for folder, category in SPLITS:
    root = DATA / folder / category
    for path in sorted(glob.glob(str(root / "test" / "*" / "*.*"))):
      defect = os.path.basename(os.path.dirname(path))
      with Image.open(path) as im:
        image = np.asarray(im.convert("RGB").resize((128, 128)))
      stem = os.path.splitext(os.path.basename(path))[0]
      mask_path = root / "ground_truth" / defect / f"{stem}_mask.png"
      mask = np.zeros((128, 128), bool)
      if mask_path.exists():
        with Image.open(mask_path) as m:
          mask = np.asarray(m.convert("L").resize((128, 128), Image.NEAREST)) > 127
      out.append((category, defect, path, image, mask))
  if not out:
    sys.exit(f"no images under {DATA} (../shared/data beside the repository)")
  return out


def build(n: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  source = real_test_images()
  names = sorted({c for c, *_ in source})
  order = np.concatenate([rng.permutation(len(source)) for _ in range(n // len(source) + 1)])
  picks = [source[i] for i in order[:n]]  # every category in any n
  images = np.stack([p[3] for p in picks])
  masks = np.stack([p[4] for p in picks]).astype(np.uint8)
  labels = np.array([int(p[1] != "good") for p in picks])
  heat = ndimage.gaussian_filter(rng.random((n, 128, 128)), (0, 1.5, 1.5))
  heat = heat + 0.6 * np.stack([ndimage.gaussian_filter(m.astype(float), 2) for m in masks])
  heat = heat.astype(np.float32)
  scores = np.array([h.max() + np.sort(h.ravel())[-164:].mean() for h in heat], np.float32)
  scores += rng.normal(0, 0.02, n).astype(np.float32)
  classes = np.array([names.index(p[0]) for p in picks])
  dataset = AnomalyDataset(
      name="report benchmark", class_names=names, train_images=images[:1],
      train_classes=classes[:1], test_images=images, test_classes=classes, test_labels=labels,
      test_masks=masks, test_defects=[p[1] for p in picks],
      test_paths=[f"{p[2]}#{i}" for i, p in enumerate(picks)])
  per_category = {}
  for ci, name in enumerate(names):
    sel = classes == ci
    has_masks = bool(masks[sel].any())
    per_category[name] = Metrics.from_dict(compute_metrics(
        scores[sel], labels[sel], heat[sel], masks[sel] if has_masks else None))
  mean = Metrics.from_dict(mean_over_categories({k: v.as_dict() for k, v in per_category.items()}))
  settings = EvalSettings(dataset="report benchmark", categories=tuple(names), checkpoint_step=0,
                          method="flow_mismatch", method_options={"num_seeds": 10, "num_times": 10,
                                                                  "aggregator": "mean"},
                          use_ema=True, seed=0, val_fraction=0.1, images_per_s=0.0,
                          num_test_images=n, batch_size=32, num_devices=1)
  result = Evaluation(pooled=mean, mean=mean, per_category=per_category, settings=settings,
                      images=tuple(ImageResult(path=dataset.test_paths[i], category=names[classes[i]],
                                               defect=dataset.test_defects[i], label=int(labels[i]),
                                               score=float(scores[i]), calibrated_decision=None,
                                               width=128, height=128) for i in range(n)))
  return result, dataset, heat, scores


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=2000)
  parser.add_argument("--out", default="/tmp/fmjax_report_page")
  args = parser.parse_args()
  result, dataset, heat, scores = build(args.images)
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "report.html")
  started = time.perf_counter()
  scales = plots.heat_scales(dataset.test_classes, heat)
  data = page.evaluation_page(result, dataset, heat, scores, scales=scales)
  page.write(path, data)
  write_s = time.perf_counter() - started

  from test_report_page import open_page, start_browser  # the tests' browser set-up
  driver = start_browser()
  try:
    timings = []
    for _ in range(3):
      wall = open_page(driver, path)
      ready_ms = driver.execute_script("return window.fmjaxReadyMs")
      scrolled = driver.execute_script(  # to the first gallery, whose cards are then drawn
          "document.querySelector('.gallery').scrollIntoView(); return performance.now();")
      deadline = time.time() + 30
      while not driver.execute_script(
          "return Array.from(document.querySelectorAll('.gallery .card canvas')).slice(0, 8)"
          ".every(c => c.getContext('2d').getImageData(c.width / 2, c.height / 2, 1, 1).data[3] > 0)"):
        assert time.time() < deadline, "the first cards were never drawn"
        time.sleep(0.01)
      drawn_ms = driver.execute_script("return performance.now()") - scrolled
      move_ms = driver.execute_script(
          "const s = document.querySelector('#cat-0 input.threshold'); const t = performance.now();"
          "s.value = Math.floor(Number(s.max) / 3); s.dispatchEvent(new Event('input'));"
          "return performance.now() - t;")
      timings.append((ready_ms, drawn_ms, move_ms, wall))
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
  finally:
    driver.quit()
  best = min(timings)
  print(json.dumps({"benchmark": "report_page", "images": args.images,
                    "page_mb": round(os.path.getsize(path) / 1e6, 2),
                    "thumbnail_sides": data["thumbnails"],
                    "write_s": round(write_s, 2), "ready_ms": round(best[0]),
                    "cards_drawn_after_scroll_ms": round(best[1]), "slider_move_ms": round(best[2], 1),
                    "load_wall_s": round(best[3], 2), "console_errors": len(errors),
                    "runs": [[round(v) for v in t[:3]] for t in timings]}))


if __name__ == "__main__":
  main()
