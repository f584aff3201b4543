"""The seven metrics of one workdir's evaluations beside the paper's, as JSON lines.

  python benchmarks/eval_summary.py --workdir runs/gpu/bottle \
      --reports=eval_bfloat16,eval_float32 [--paper=bottle] [--output=bottle.jsonl]

Each report is a folder of <workdir> holding an evaluation's metrics.json (what
`python -m fmjax.main` writes to <workdir>/eval/; the GPU suite renames it after each dtype).
One row per report (its checkpoint step, epochs trained, the metrics in percent, the paper's),
then, for two reports, one row of their differences (second minus first, in AUROC fractions).
"""

import json
import os

from absl import app, flags

import bench_util

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The run's workdir.")
flags.DEFINE_string("reports", "eval", "Comma-separated report folders inside the workdir.")
flags.DEFINE_string("paper", "bottle", "The paper's row to print beside (Table 1/2 of the paper).")
flags.DEFINE_integer("train_images", 209, "Training images, for the epochs of the step.")
flags.DEFINE_integer("batch_size", 32, "Training batch size, for the epochs of the step.")
flags.DEFINE_string("output", "", "Also append the JSON lines to this file.")
flags.mark_flags_as_required(["workdir"])

KEYS = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max",
        "pixel_aupro")
PAPER = {"bottle": dict(zip(KEYS, (99.1, 99.7, 97.6, 97.8, 76.8, 69.9, 93.0)))}


def main(argv):
  del argv
  env = bench_util.environment()
  rows = []
  for name in FLAGS.reports.split(","):
    with open(os.path.join(FLAGS.workdir, name, "metrics.json")) as f:
      result = json.load(f)
    settings = result["settings"]
    step = int(settings["checkpoint_step"])
    row = {"benchmark": "reproduction", "report": name, "dataset": settings["dataset"],
           "categories": settings["categories"], "checkpoint_step": step,
           "epochs": round(step * FLAGS.batch_size / FLAGS.train_images, 1),
           "method_options": settings.get("method_options"),
           "scoring_images_per_s": settings.get("images_per_s"),
           **{k: round(100 * result[k], 2) for k in KEYS if result.get(k) is not None},
           "paper": PAPER.get(FLAGS.paper), **env}
    rows.append((row, result))
    bench_util.emit(row, FLAGS.output)
  if len(rows) == 2:
    (a, ra), (b, rb) = rows
    diff = {f"{k}_difference": round(rb[k] - ra[k], 6) for k in KEYS
            if ra.get(k) is not None and rb.get(k) is not None}
    bench_util.emit({"benchmark": "reproduction_dtype_difference",
                     "reports": [a["report"], b["report"]], **diff, **env}, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
