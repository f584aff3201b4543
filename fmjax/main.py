"""fmjax entry point.

  python -m fmjax.main --config configs/<x>.py --workdir <dir> \
      [--config.a.b=value ...]
      [--mode=train|evaluate|train_and_evaluate|calibrate|export|describe|score|study|scaling]

  --mode=study runs the ablation named by --config.study.name (compute, aggregators,
  checkpoints, seeds, pooling) on the workdir's trained model: <workdir>/studies/<name>/.
  --mode=calibrate scores the normal images held out of training (data.val_fraction) and
  writes per-category thresholds at calibrate.false_alarm_rates to <workdir>/calibration.json
  (train_and_evaluate does it between training and evaluation).
  --mode=export writes the scorer as StableHLO (or, with --config.export.format=onnx, as one
  ONNX graph) with its parameters and thresholds to <workdir>/export/, for fmjax.deploy (no
  Flax, model code or checkpoint needed there; no JAX for ONNX).
  --mode=scaling (the default of configs/scaling.py) trains one arm per global batch size
  (scaling.batch_sizes) in <workdir>/arms/batch_<B>/ and writes the compute-scaling report to
  <workdir>/scaling/: held-out loss, gradient noise scale, critical batch size, AUROC per FLOP.
  --mode=score scores a folder of unlabeled images (--config.data.score_dir) with the
  workdir's trained model: scores.csv and heatmaps in <workdir>/scores/<folder>/. Without
  data.score_dir, a data set with unlabeled server splits (mvtec_ad2: test_private,
  test_private_mixed) is scored into its evaluation server's format (fmjax/report/submission.py).
"""

import os
import signal
import sys

from fmjax.core import xla_cpu  # noqa: E402  (imports no jax)

# fmjax's faster XLA:CPU settings, unless XLA_FLAGS names them already (fmjax/core/xla_cpu.py;
# the CPU stays one XLA device using every core). Must run before jax is imported.
xla_cpu.apply_defaults()
if __name__ == "__main__":  # glibc's malloc settings for CPU runs: a restart, so not on import
  xla_cpu.restart_with_malloc_tunables()

from absl import app, flags, logging  # noqa: E402  (after the XLA flags are set)
from ml_collections import config_flags

from fmjax import configlib  # noqa: E402
from fmjax.core import console, sharding  # noqa: E402
from fmjax.core.errors import ConfigError, UserError  # noqa: E402
from fmjax.core.settings import MODES  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "A configs/*.py file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.DEFINE_enum("mode", None, list(MODES),
                  "What to run (default: the config's `mode`, else train_and_evaluate).")
flags.mark_flags_as_required(["config"])

def run(config, workdir: str | None, mode: str | None = None):
  """Runs `mode` (default: config.mode, else train_and_evaluate) for `config` in `workdir`;
  returns what the last phase returned (evaluate and train_and_evaluate: the
  `fmjax.report.records.Evaluation`, None on processes other than 0; calibrate: the
  `fmjax.decide.calibration.Calibration`)."""
  console.new_run()
  configlib.validate(config)
  mode = mode or config.mode or "train_and_evaluate"
  if mode == "describe":
    from fmjax.studies.describe import describe
    return describe(config)
  if not workdir:
    raise ConfigError(f"--workdir is required for --mode={mode}.")
  workdir = os.path.expanduser(workdir)  # --workdir=~/x (no shell expanded it)
  sharding.initialize_distributed()
  configlib.validate_devices(config, mode)  # before anything is created
  dataset = None
  if mode not in ("score", "export"):  # a refused data configuration writes nothing
    from fmjax.data import load_dataset
    dataset = load_dataset(config.data)
  elif mode == "score" and config.data.score_dir:  # a missing or empty folder: before anything
    from fmjax.report.evaluate import score_folder_images
    score_folder_images(config.data.score_dir, workdir)
  elif mode == "score":  # a set's unlabeled server splits (MVTec AD 2's private tests)
    from fmjax.report.submission import server_splits
    server_splits(config)
  from fmjax.core.workdir import WorkdirLock, prepare_workdir
  prepare_workdir(workdir)
  with WorkdirLock(workdir, mode):
    from fmjax.core.runlog import write_run_record
    write_run_record(workdir, config, mode)
    return _run_locked(config, workdir, mode, dataset)


def _run_locked(config, workdir: str, mode: str, dataset):
  from fmjax.decide import decisions
  from fmjax.report import evaluate
  from fmjax.train import loop as train
  if mode == "score" and not config.data.score_dir:
    from fmjax.report.submission import score_for_server
    return score_for_server(config, workdir)
  if mode == "score":
    return evaluate.score_folder(config, workdir)
  if mode == "export":
    from fmjax.decide.export import export_scorer
    return export_scorer(config, workdir)
  result = None
  if mode == "study":
    from fmjax.studies.ablations import run_study
    return run_study(config, workdir, dataset)
  if mode == "scaling":
    from fmjax.studies.scaling import run_scaling
    return run_scaling(config, workdir, dataset)
  if mode in ("train", "train_and_evaluate"):
    result = train.train(config, workdir, dataset)
  held_out = dataset.val_images is not None and len(dataset.val_images) > 0
  session = None  # calibration and evaluation share the checkpoint and its compiled scorers
  if mode == "train_and_evaluate" and held_out:
    from fmjax.score.session import ScoringSession
    session = ScoringSession.load(config, workdir, dataset.class_names)
  if mode == "calibrate" or (mode == "train_and_evaluate" and held_out):
    result = decisions.calibrate(config, workdir, dataset, session)
  if mode in ("evaluate", "train_and_evaluate"):
    result = evaluate.evaluate(config, workdir, dataset, session)
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:  # library INFO logs (Orbax, XLA) off unless asked: -v 0
    logging.set_verbosity(logging.WARNING)
  console.route_warnings()
  signal.signal(signal.SIGTERM, _terminate)
  try:
    run(FLAGS.config, FLAGS.workdir, FLAGS.mode)
  except UserError as e:  # a user's mistake: one message; anything else keeps its traceback
    console.error(str(e))
    sys.exit(1)
  except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: never swallowed, never a traceback
    what = "SIGTERM" if isinstance(e, Terminated) else "Ctrl-C"
    console.error(f"interrupted by {what}: results being written were left as they were before "
                  "this run (training resumes from its last checkpoint); run it again to finish.")
    sys.exit(143 if isinstance(e, Terminated) else 130)


class Terminated(KeyboardInterrupt):
  """SIGTERM, raised where the program is, so that what is being written is undone as for
  Ctrl-C (`fmjax.core.files.folder_group`)."""


def _terminate(signum, frame):
  raise Terminated()


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, after refusing config keys that moved (naming their new key)."""
  moved = configlib.renamed_key_errors(
      a.split("=", 1)[0][len("--config."):] for a in argv[1:] if a.startswith("--config."))
  if moved:
    console.error("; ".join(moved))
    sys.exit(1)
  try:
    rest = FLAGS(argv)
    FLAGS.config.keys()  # a config file that failed to load raises here, not at parse time
    return rest
  except Exception as e:  # pylint: disable=broad-except  (a bad flag, key or config file)
    console.error(_flag_error(e, argv))
    sys.exit(1)


def _flag_error(e: Exception, argv: list[str]) -> str:
  """One line for a flag-parsing error: an unknown config key keeps its "did you mean" hint."""
  text = str(e.args[0]) if isinstance(e, (AttributeError, KeyError)) and e.args else str(e)
  text = text.replace("\\n", "\n").replace("\\'", "'")
  parts = [l.strip().strip("'\"") for l in text.splitlines() if l.strip()]
  if isinstance(e, (AttributeError, KeyError)):
    return f"unknown config key {parts[0]!r}" + (f" ({' '.join(parts[1:])})" if parts[1:] else "")
  if "No such file or directory" in text:
    missing = [a for a in argv if a.startswith("--config=")] or [
        argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    name = missing[0].split("=", 1)[-1] if missing else "the config file"
    return f"config file {name!r} not found (run from the repository root, or give its path)."
  return " ".join(parts)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
