"""The seven metrics of a trained run against the heatmap smoothing sigma, from one scoring pass.

  python benchmarks/smoothing_sigma.py --config=configs/cpu_bottle.py --workdir=runs/cpu_bottle
  python benchmarks/smoothing_sigma.py --config=configs/cpu_bottle.py --workdir=runs/cpu_mtd \
      --config.data.root=../shared/data/mtd --config.data.categories=magnetic_tile \
      --sigmas=0,0.5,1,2,4

Scores the workdir's test split once without smoothing (the latest checkpoint, the config's
scorer), then, for each sigma (pixels of the heatmap), filters and scores every map as
evaluation does (`fmjax.score.maps.finish`: scipy.ndimage.gaussian_filter, then the image
score), and computes the metrics (`fmjax.report.metrics.compute_metrics`, pooled over the split).
The same result as `--mode=evaluate --config.evaluate.smoothing_sigma=s` for each s, at the
cost of one evaluation. One JSON line per sigma (metrics in percent) and a Markdown table.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/cpu_bottle.py", "The run's config.",
                                lock_config=False)
flags.DEFINE_string("workdir", "runs/cpu_bottle", "The trained run.")
flags.DEFINE_string("sigmas", "0,0.5,1,2,4", "Comma-separated sigmas in heatmap pixels.")
flags.DEFINE_string("output", "", "Also append the JSON lines to this file.")

COLUMNS = (("image_auroc", "I-AUROC"), ("pixel_auroc", "P-AUROC"), ("pixel_ap", "P-AP"),
           ("pixel_aupro", "PRO"), ("image_ap", "I-AP"), ("image_f1_max", "I-F1max"),
           ("pixel_f1_max", "P-F1max"))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # no library INFO lines (Orbax) between the rows
  import numpy as np  # pylint: disable=g-import-not-at-top

  import bench_util  # pylint: disable=g-import-not-at-top
  from fmjax.data import load_dataset  # pylint: disable=g-import-not-at-top
  from fmjax.report.metrics import compute_metrics  # pylint: disable=g-import-not-at-top
  from fmjax.score import maps  # pylint: disable=g-import-not-at-top
  from fmjax.score.session import ScoringSession  # pylint: disable=g-import-not-at-top

  config = FLAGS.config
  config.evaluate.smoothing_sigma = 0.0
  config.evaluate.smoothing_sigma_fraction = 0.0
  dataset = load_dataset(config.data)
  session = ScoringSession.load(config, FLAGS.workdir, dataset.class_names)
  heatmaps, _, rate = session.score(dataset.test_images, dataset.test_classes, what="test")
  sigmas = [float(s) for s in FLAGS.sigmas.split(",")]
  masks = dataset.test_masks
  rows = []
  for sigma in sigmas:
    # Evaluation's own post-processing of a map (smoothing, then the image score).
    smoothed, scores = zip(*(maps.finish(m, {"smoothing_sigma": sigma}) for m in heatmaps))
    scores = np.array(scores, np.float32)
    metrics = compute_metrics(scores, dataset.test_labels,
                              None if masks is None else list(smoothed), masks)
    row = {"benchmark": "smoothing_sigma", "workdir": FLAGS.workdir, "data": config.data.root,
           "categories": list(dataset.class_names), "step": int(session.step),
           "method": config.evaluate.method, "num_seeds": int(config.evaluate.num_seeds),
           "num_times": int(config.evaluate.num_times), "sigma_pixels": sigma,
           "num_test_images": len(scores), "images_per_s": round(rate, 2),
           **{k: round(100 * float(metrics[k]), 2) for k, _ in COLUMNS if k in metrics},
           **bench_util.environment()}
    bench_util.emit(row, FLAGS.output)
    rows.append(row)
  print(bench_util.metrics_table(rows, [("sigma (px)", lambda r: f"{r['sigma_pixels']:g}")],
                                 COLUMNS))

if __name__ == "__main__":
  app.run(main)
