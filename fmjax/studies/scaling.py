"""Large-batch compute-scaling study (`--mode=scaling`, the default of configs/scaling.py).

One training run ("arm") per global batch size B in `scaling.batch_sizes`, one after another
on the whole mesh, each in <workdir>/arms/batch_<B>/ (a complete fmjax workdir):

  learning rate   train.learning_rate at scaling.base_batch_size, scaled by scaling.lr_rule
                  (none | linear | sqrt in B / base), linear warm-up over
                  scaling.warmup_examples examples (ceil(examples / B) updates)
  budget          the same number of examples, epochs or optimizer steps per arm
  held-out loss   `fmjax.studies.validation` at multiples of scaling.val_every_examples examples
                  (val_metrics.jsonl; needs data.val_fraction > 0)
  noise scale     `fmjax.studies.noise_scale` every scaling.noise_scale_every steps (noise_metrics.jsonl)
  at the end      the seven metrics (eval/, as --mode=evaluate), training FLOPs (XLA's count of
                  one update x steps), wall time and images/s of the training loop: arm.json

A rerun skips a finished arm (arm.json) only when its model, data, scorer and checkpoint
(fingerprints) are the ones it would use now: another scorer (K, T, aggregator, seed, EMA)
evaluates the arm again, another model or data is refused by its checkpoint; a broken arm
resumes from its checkpoint; an arm whose ARM_KEYS changed is refused. The report goes to
<workdir>/scaling/ (written as one group): report.html, results.json, results.md and plots (val_loss.png, batch_scaling.png, auroc_vs_flops.png,
noise_scale.png). Steps and examples to a target held-out loss give the critical batch size
by fitting S(B) = S_min + E_min / B (McCandlish et al., 2018: (S/S_min - 1)(E/E_min - 1) = 1),
B_crit = E_min / S_min.
"""

from __future__ import annotations

import copy
import math
import os
import statistics

import jax
import numpy as np
import scipy.optimize
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from fmjax.core import console, files, plots, sharding
from fmjax.report import evaluate, page
from fmjax import methods
from fmjax.studies import noise_scale, validation
from fmjax.studies.settings import scaling_batch_sizes
from fmjax.train import loop as train
from fmjax.data import AnomalyDataset
from fmjax.core.errors import ConfigError
from fmjax.model.unet import build_unet
from fmjax.model.optim import build_optimizer, scaled_learning_rate
from fmjax.report.writer import format_percent, json_safe
from fmjax.core.runlog import read_metrics, write_run_record
from fmjax.core.workdir import prepare_workdir
from fmjax.core.records import Fields, read_json_file
from fmjax.train.restore import checkpoint_fingerprint, class_labels, model_meta, saved_steps

# What an arm's results depend on: a rerun with other values is refused.
ARM_KEYS = ("batch_size", "learning_rate", "warmup_steps", "steps", "val_steps", "val_times",
            "val_seed", "noise_scale_every", "noise_scale_groups")


def budget_examples(sc, batch_size: int, num_train: int) -> int:
  """The examples an arm of `batch_size` sees: its steps x batch."""
  return budget_steps(sc, batch_size, num_train) * batch_size


def budget_steps(sc, batch_size: int, num_train: int) -> int:
  """Optimizer steps of the arm of `batch_size` under scaling.budget / budget_unit."""
  if sc.budget_unit == "steps":
    return max(1, int(round(sc.budget)))
  examples = sc.budget * (num_train if sc.budget_unit == "epochs" else 1)
  return max(1, math.ceil(examples / batch_size))


def val_every_examples(sc, batch_sizes: list[int], num_train: int) -> int:
  """scaling.val_every_examples, or (0) 1/40 of the smallest arm's examples rounded up to a
  multiple of the largest batch, so that every arm is evaluated at the same example counts
  when the batch sizes divide each other."""
  if sc.val_every_examples > 0:
    return int(sc.val_every_examples)
  least = min(budget_examples(sc, b, num_train) for b in batch_sizes)
  big = max(batch_sizes)
  return max(big, math.ceil(least / 40 / big) * big)


def plan_arms(config, num_train: int) -> list[dict]:
  """The arms' settings (ARM_KEYS), in ascending batch size."""
  sc = config.scaling
  sizes = scaling_batch_sizes(sc.batch_sizes)
  every = val_every_examples(sc, sizes, num_train)
  arms = []
  for b in sizes:
    steps = budget_steps(sc, b, num_train)
    arms.append({"batch_size": b,
                 "learning_rate": scaled_learning_rate(config.train.learning_rate, b,
                                                       sc.base_batch_size, sc.lr_rule),
                 "warmup_steps": math.ceil(sc.warmup_examples / b),
                 "steps": steps, "val_steps": validation.eval_steps(b, every, steps),
                 "val_times": int(sc.val_times), "val_seed": int(sc.val_seed),
                 "noise_scale_every": int(sc.noise_scale_every),
                 "noise_scale_groups": int(sc.noise_scale_groups)})
  return arms


def arm_config(config, arm: dict):
  """The run config of one arm: batch, learning rate, warm-up and steps set."""
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    cfg.mode = "train"
    cfg.train.update(batch_size=arm["batch_size"], learning_rate=arm["learning_rate"],
                     warmup_steps=arm["warmup_steps"], num_steps=arm["steps"])
  return cfg


def arm_dir(workdir: str, batch_size: int) -> str:
  return os.path.join(workdir, "arms", f"batch_{batch_size}")


def _write_json(path: str, obj) -> None:
  """Strict JSON (NaN -> null), written by process 0 only."""
  if console.is_main_process():
    files.write_json(path, json_safe(obj))


def _check_same(saved: dict, arm: dict, where: str) -> None:
  diffs = [f"{k}: {saved.get(k)!r} there, {arm[k]!r} now" for k in ARM_KEYS if saved.get(k) != arm[k]]
  if diffs:
    raise ConfigError(f"The arm in {where} was run with other settings:\n  " + "\n  ".join(diffs) +
                      "\nUse a new --workdir, or restore the scaling.* and train.* values it used.")


def _provenance(cfg, dataset: AnomalyDataset) -> dict:
  """What an arm's figures depend on besides ARM_KEYS: the model, the training and test data
  (fingerprints) and the scorer of its evaluation."""
  ec = cfg.evaluate
  return {"model": model_meta(cfg, dataset.class_names), "data": dataset.fingerprint(),
          "test_data": dataset.test_fingerprint(),
          "scorer": {"method": ec.method, "method_options": methods.scorer_options(ec),
                     "use_ema": bool(ec.use_ema), "seed": ec.seed}}


def _stale(record: dict, current: dict, cfg, directory: str) -> str:
  """"" when the finished arm `record` was made from `current` and the arm's newest checkpoint;
  otherwise what differs."""
  differ = [k for k in current if record.get(k) != current[k]]
  if differ:
    return f"its {', '.join(differ)} differ from now"
  steps = saved_steps(directory)
  if not steps:
    return "its checkpoints are gone"
  if record.get("checkpoint") != checkpoint_fingerprint(cfg, directory, steps[-1]):
    return "its newest checkpoint is another model than the one evaluated"
  return ""


def _read_record(path: str) -> dict:
  """arm.json, checked (a hand-edited or truncated file is one CorruptFileError)."""
  fix = f"delete {path} to evaluate the arm again"
  f = Fields(read_json_file(path, fix), path, fix)
  for key in ARM_KEYS:
    f.numbers(key) if key == "val_steps" else f.number(key)
  for key in ("image_auroc", "pixel_auroc", "val_loss", "train_flops", "wall_s"):
    f.number(key, nullable=True)
  f.list_of("val_curve")
  return f.obj


def train_wall_seconds(records: list[dict]) -> float:
  """Seconds the training loop ran, from train_metrics.jsonl records: each record's steps since
  the previous one over its steps/s (the first includes compilation)."""
  wall, last = 0.0, 0
  for r in records:
    if r.get("steps_per_s"):
      wall += (r["step"] - last) / r["steps_per_s"]
    last = r["step"]
  return wall


def steady_images_per_s(records: list[dict]) -> float | None:
  """The median images/s of the training log, the first interval (compilation) left out."""
  rates = [r["images_per_s"] for r in records if "images_per_s" in r]
  rates = rates[1:] or rates
  return float(statistics.median(rates)) if rates else None


def final_noise_scale(records: list[dict]) -> float | None:
  """B_simple over the measurements of the last quarter of the arm's steps (at least one)."""
  rows = [r for r in records if "trace_sigma" in r and "grad_sq" in r]
  if not rows:
    return None
  last = rows[-1]["step"]
  tail = [r for r in rows if r["step"] >= 0.75 * last] or rows[-1:]
  value = noise_scale.b_simple([r["trace_sigma"] for r in tail], [r["grad_sq"] for r in tail])
  return value if math.isfinite(value) else None


def _arm_hooks(cfg, directory: str, dataset: AnomalyDataset, arm: dict, model) -> list:
  """The arm's training hooks: the held-out loss and, when measured, the gradient noise scale."""
  mesh = sharding.make_mesh(cfg.mesh.num_devices)
  norm = train.norm_stats_for(directory, dataset)
  hooks = [validation.ValidationLoss(
      directory, model, norm, dataset.val_images,
      class_labels(cfg, dataset.val_classes, dataset.num_classes), num_times=arm["val_times"],
      seed=arm["val_seed"], batch_size=cfg.evaluate.batch_size, train_batch_size=arm["batch_size"],
      steps=arm["val_steps"], mesh=mesh, use_ema=cfg.evaluate.use_ema and cfg.train.ema_decay > 0)]
  if arm["noise_scale_every"] > 0:
    measure = noise_scale.make_measure_fn(
        model, norm, cfg.train.objective, methods.objective_options(cfg.train), cfg.seed,
        arm["noise_scale_groups"], mesh)
    hooks.append(noise_scale.NoiseScale(directory, measure, batch_size=arm["batch_size"],
                                        groups=arm["noise_scale_groups"],
                                        every=arm["noise_scale_every"]))
  return hooks


def run_arm(config, workdir: str, dataset: AnomalyDataset, arm: dict) -> dict | None:
  """Trains (or resumes) and evaluates one arm; returns its record (None on processes > 0)."""
  directory = arm_dir(workdir, arm["batch_size"])
  record_path = os.path.join(directory, "arm.json")
  cfg = arm_config(config, arm)
  if files.exists(record_path):
    record = _read_record(record_path)
    _check_same(record, arm, directory)
    why = _stale(record, _provenance(cfg, dataset), cfg, directory)
    if not why:
      console.say(f"scaling: batch {arm['batch_size']} already done ({directory}/arm.json)")
      return record
    console.say(f"scaling: batch {arm['batch_size']}: {why}; training resumes or is kept, "
                "the arm is evaluated again")
  prepare_workdir(directory)
  settings_path = os.path.join(directory, "arm_settings.json")
  if files.exists(settings_path):
    fix = f"delete {settings_path} if the arm was run with the current settings"
    _check_same(Fields(read_json_file(settings_path, fix), settings_path, fix).obj, arm, directory)
  _write_json(settings_path, arm)
  write_run_record(directory, cfg, "scaling arm")
  model = build_unet(cfg.model, dataset.num_classes)
  hooks = _arm_hooks(cfg, directory, dataset, arm, model)
  console.say(f"scaling: batch {arm['batch_size']}, learning rate {arm['learning_rate']:.3g}, "
              f"{arm['steps']} steps, warm-up {arm['warmup_steps']} steps -> {directory}")
  train.train(cfg, directory, dataset, hooks=tuple(hooks))
  result = evaluate.evaluate(cfg, directory, dataset)
  if not console.is_main_process():
    return None
  from fmjax.studies.describe import train_step_flops  # pylint: disable=g-import-not-at-top
  step_flops = train_step_flops(model, build_optimizer(cfg.train), arm["batch_size"],
                                cfg.data.image_size, cfg.train.ema_decay, cfg.train.objective,
                                methods.objective_options(cfg.train))
  train_log = read_metrics(directory, "train")
  val_log = read_metrics(directory, "val")
  noise_log = read_metrics(directory, "noise")
  mean = result.mean  # an Evaluation (fmjax/report/records.py)
  record = {
      **arm, **_provenance(cfg, dataset), "checkpoint": result.settings.checkpoint,
      "examples": arm["steps"] * arm["batch_size"],
      "val_loss": val_log[-1]["val_loss"] if val_log else None,
      **{k: getattr(mean, k) for k in ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc",
                                  "pixel_ap", "pixel_f1_max", "pixel_aupro")},
      "train_flops": step_flops * arm["steps"], "flops_per_step": step_flops,
      "wall_s": train_wall_seconds(train_log), "images_per_s": steady_images_per_s(train_log),
      "num_devices": result.settings.num_devices, "num_processes": jax.process_count(),
      "gradient_noise_scale": final_noise_scale(noise_log),
      "val_curve": [{"steps": r["step"], "examples": int(r["examples"]), "val_loss": r["val_loss"]}
                    for r in val_log],
      "noise_curve": [{"steps": r["step"], "examples": int(r["examples"]),
                       "gradient_noise_scale": r.get("gradient_noise_scale")} for r in noise_log]}
  _write_json(record_path, record)
  return record


def steps_to_target(curve: list[dict], target: float) -> float | None:
  """The (linearly interpolated) step at which the held-out loss first reaches `target`, from
  [{steps, val_loss}] in step order; None if it never does."""
  prev = None
  for point in curve:
    if point["val_loss"] is not None and point["val_loss"] <= target:
      if prev is None or prev["val_loss"] == point["val_loss"]:
        return float(point["steps"])
      frac = (prev["val_loss"] - target) / (prev["val_loss"] - point["val_loss"])
      return float(prev["steps"] + frac * (point["steps"] - prev["steps"]))
    prev = point
  return None


def auto_target(curves: list[list[dict]]) -> float | None:
  """The lowest held-out loss every arm reaches: the largest of the arms' minima."""
  minima = [min(p["val_loss"] for p in c if p["val_loss"] is not None) for c in curves if c]
  return max(minima) if minima else None


def fit_critical_batch(batch_sizes, steps) -> dict | None:
  """S(B) = S_min + E_min / B fitted (non-negative least squares on relative residuals) to the
  steps to target of each batch size; {steps_min, examples_min, critical_batch_size}, or None
  with fewer than two distinct batch sizes. critical_batch_size = E_min / S_min (None when
  S_min = 0: no batch size tried stopped paying off)."""
  b = np.asarray(batch_sizes, np.float64)
  s = np.asarray(steps, np.float64)
  if len(np.unique(b)) < 2:
    return None
  a = np.stack([np.ones_like(b), 1.0 / b], axis=1) / s[:, None]
  (s_min, e_min), _ = scipy.optimize.nnls(a, np.ones_like(s))
  return {"steps_min": float(s_min), "examples_min": float(e_min),
          "critical_batch_size": float(e_min / s_min) if s_min > 0 else None}


def summarize(config, arms: list[dict]) -> dict:
  """results.json's content: the arms (with steps/examples to target), the target, the fit."""
  sc = config.scaling
  target = float(sc.target_val_loss) if sc.target_val_loss > 0 else auto_target(
      [a["val_curve"] for a in arms])
  rows = []
  for a in arms:
    s = steps_to_target(a["val_curve"], target) if target is not None else None
    rows.append({**a, "steps_to_target": s,
                 "examples_to_target": None if s is None else s * a["batch_size"]})
  reached = [r for r in rows if r["steps_to_target"]]
  fit = fit_critical_batch([r["batch_size"] for r in reached],
                           [r["steps_to_target"] for r in reached]) if len(reached) >= 2 else None
  return {"arms": rows, "target_val_loss": target,
          "target_rule": "scaling.target_val_loss" if sc.target_val_loss > 0 else
                         "the largest of the arms' minimum held-out losses",
          "critical_batch_size": fit and fit["critical_batch_size"], "fit": fit,
          "settings": {"lr_rule": sc.lr_rule, "base_batch_size": int(sc.base_batch_size),
                       "base_learning_rate": float(config.train.learning_rate),
                       "warmup_examples": int(sc.warmup_examples), "budget": float(sc.budget),
                       "budget_unit": sc.budget_unit, "val_times": int(sc.val_times),
                       "noise_scale_groups": int(sc.noise_scale_groups),
                       "dataset": config.data.name, "image_size": int(config.data.image_size),
                       "evaluate": {"method": config.evaluate.method,
                                    "num_seeds": int(config.evaluate.num_seeds),
                                    "num_times": int(config.evaluate.num_times)}}}


def _num(v, fmt: str) -> str:
  return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def results_table(results: dict) -> str:
  """results.md: one row per arm, then the target and the critical batch size."""
  lines = ["| Batch | LR | Steps | Examples | Val loss | Steps to target | Examples to target | "
           "I-AUROC | P-AUROC | Train PFLOP | Wall s | Images/s | B_simple |",
           "|" + "---|" * 13]
  for a in results["arms"]:
    lines.append(
        f"| {a['batch_size']} | {a['learning_rate']:.3g} | {a['steps']} | {a['examples']} | "
        f"{_num(a['val_loss'], '.4f')} | {_num(a['steps_to_target'], '.1f')} | "
        f"{_num(a['examples_to_target'], '.0f')} | {format_percent(a['image_auroc'])} | "
        f"{format_percent(a['pixel_auroc'])} | {_num(a['train_flops'] / 1e15, '.4g')} | "
        f"{_num(a['wall_s'], '.1f')} | {_num(a['images_per_s'], '.1f')} | "
        f"{_num(a['gradient_noise_scale'], '.1f')} |")
  fit = results["fit"]
  lines += ["", f"Target held-out loss: {_num(results['target_val_loss'], '.4f')} "
                f"({results['target_rule']})."]
  if fit is None:
    lines.append("Critical batch size: not fitted (fewer than two arms reached the target).")
  else:
    lines.append(f"Fit S(B) = S_min + E_min / B: S_min = {fit['steps_min']:.1f} steps, "
                 f"E_min = {fit['examples_min']:.0f} examples; critical batch size E_min / S_min "
                 f"= {_num(fit['critical_batch_size'], '.1f')}.")
  s = results["settings"]
  lines.append(f"Learning rate {s['base_learning_rate']:g} at batch {s['base_batch_size']}, "
               f"rule {s['lr_rule']}, warm-up {s['warmup_examples']} examples; budget "
               f"{s['budget']:g} {s['budget_unit']} per arm. B_simple: the gradient noise scale "
               "over the last quarter of training.")
  return "\n".join(lines) + "\n"


def _colours(n: int):
  return [plots.PALETTE[i % len(plots.PALETTE)] for i in range(n)]


def _finish(ax, xlabel: str, ylabel: str, title: str) -> None:
  """Axis labels, title, a light grid and the legend."""
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(True, alpha=0.3)
  plots.legend(ax, loc="best")


def _plain_log_ticks(axis) -> None:
  """Major ticks of a log axis as plain numbers, minor ones unlabelled (no crowded 10^x labels)."""
  axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
  axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
  axis.set_minor_formatter(NullFormatter())


def val_loss_figure(results: dict):
  """Held-out loss against examples and against steps, one line per arm."""
  fig = plots.figure(10.0, 4.0)
  axes = fig.subplots(1, 2)
  for a, colour in zip(results["arms"], _colours(len(results["arms"]))):
    pts = [p for p in a["val_curve"] if p["steps"] > 0]
    for ax, key in zip(axes, ("examples", "steps")):
      ax.plot([p[key] for p in pts], [p["val_loss"] for p in pts], color=colour, marker=".",
              label=f"B={a['batch_size']}")
  for ax, key in zip(axes, ("examples", "steps")):
    if results["target_val_loss"] is not None:
      ax.axhline(results["target_val_loss"], color="grey", linestyle=":", label="target")
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel(f"training {key}")
    ax.set_ylabel("held-out CFM loss")
    ax.grid(True, alpha=0.3)
  axes[0].set_title("Held-out loss vs examples")
  axes[1].set_title("Held-out loss vs steps")
  plots.legend(axes[1], loc="best")
  return fig


def batch_scaling_figure(results: dict):
  """Steps and examples to the target loss against the batch size, with the perfect-scaling and
  no-benefit lines through the smallest batch, the fitted curve and B_crit marked."""
  fig = plots.figure(10.0, 4.0)
  axes = fig.subplots(1, 2)
  reached = [a for a in results["arms"] if a["steps_to_target"]]
  fit = results["fit"]
  for ax, key in zip(axes, ("steps_to_target", "examples_to_target")):
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    _plain_log_ticks(ax.yaxis)
    ax.set_xlabel("global batch size B")
    ax.set_ylabel(key.replace("_", " "))
    ax.grid(True, alpha=0.3)
    if not reached:
      ax.text(0.5, 0.5, "no arm reached the target", transform=ax.transAxes, ha="center")
      continue
    b = np.array([a["batch_size"] for a in reached], np.float64)
    ax.plot(b, [a[key] for a in reached], "o", color=plots.PALETTE[0], label="measured")
    grid = np.geomspace(b.min(), b.max(), 64)
    b0, s0 = b[0], reached[0]["steps_to_target"]
    if key == "steps_to_target":
      perfect, none_ = s0 * b0 / grid, np.full_like(grid, s0)
    else:
      perfect, none_ = np.full_like(grid, s0 * b0), s0 * grid
    ax.plot(grid, perfect, "--", color="grey", label="perfect scaling")
    ax.plot(grid, none_, ":", color="grey", label="no benefit")
    if fit is not None:
      steps = fit["steps_min"] + fit["examples_min"] / grid
      ax.plot(grid, steps if key == "steps_to_target" else steps * grid, color=plots.PALETTE[1],
              label="fit S_min + E_min/B")
      if fit["critical_batch_size"]:
        ax.axvline(fit["critical_batch_size"], color=plots.PALETTE[2], linestyle="-.",
                   label=f"B_crit = {fit['critical_batch_size']:.0f}")
  axes[0].set_title("Steps to the target loss")
  axes[1].set_title("Examples to the target loss")
  plots.legend(axes[0], loc="best")
  return fig


def auroc_flops_figure(results: dict):
  """Final image and pixel AUROC against training FLOPs, points labelled by batch size (a log
  axis when the FLOPs span more than a decade, as with a budget in steps)."""
  fig = plots.figure(6.0, 4.0)
  ax = fig.subplots()
  arms = results["arms"]
  flops = [a["train_flops"] for a in arms if a.get("train_flops")]
  for key, label, colour, dy in (("image_auroc", "image AUROC", plots.PALETTE[0], 4),
                                 ("pixel_auroc", "pixel AUROC", plots.PALETTE[1], -10)):
    pts = [(a["train_flops"], 100 * a[key], a["batch_size"]) for a in arms
           if a.get(key) is not None and math.isfinite(a[key])]
    if not pts:
      continue
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", color=colour, label=label)
    for x, y, b in pts:
      ax.annotate(f"B={b}", (x, y), textcoords="offset points", xytext=(5, dy), fontsize=7)
  if flops and max(flops) > 10 * min(flops):
    ax.set_xscale("log")
  else:
    ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
    if flops:
      ax.set_xlim(min(flops) * 0.97, max(flops) * 1.03)
  _finish(ax, "training FLOPs (XLA count of the updates)", "AUROC (%)",
          "Anomaly detection against training compute")
  return fig


def noise_scale_figure(results: dict):
  """The gradient noise scale (running B_simple) over training examples, one line per arm."""
  fig = plots.figure(6.0, 4.0)
  ax = fig.subplots()
  any_line = False
  for a, colour in zip(results["arms"], _colours(len(results["arms"]))):
    pts = [(p["examples"], p["gradient_noise_scale"]) for p in a["noise_curve"]
           if p["gradient_noise_scale"] is not None and p["gradient_noise_scale"] > 0]
    if pts:
      any_line = True
      ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colour, label=f"B={a['batch_size']}")
  if any_line:
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
  else:
    ax.text(0.5, 0.5, "no positive estimate yet", transform=ax.transAxes, ha="center")
  _finish(ax, "training examples", "B_simple = tr(Sigma) / |G|^2", "Gradient noise scale")
  return fig


FIGURES = {"val_loss.png": val_loss_figure, "batch_scaling.png": batch_scaling_figure,
           "auroc_vs_flops.png": auroc_flops_figure, "noise_scale.png": noise_scale_figure}


def page_plots(results: dict) -> list[dict]:
  """The figures' data for report.html (`fmjax.report.page.table_page`), hover values and log
  axes in the page."""
  arms = results["arms"]
  reached = [a for a in arms if a["steps_to_target"]]
  flops = [(a, a.get("train_flops")) for a in arms]
  return [
      {"title": "Held-out loss vs examples", "x": "training examples", "y": "held-out CFM loss",
       "log_x": True, "log_y": False,
       "series": [page.series(f"B={a['batch_size']}", [(p["examples"], p["val_loss"])
                                                       for p in a["val_curve"] if p["steps"] > 0])
                  for a in arms]},
      {"title": "Steps and examples to the target loss", "x": "global batch size B",
       "y": "to the target", "log_x": True, "log_y": True,
       "series": [page.series("steps", [(a["batch_size"], a["steps_to_target"]) for a in reached]),
                  page.series("examples", [(a["batch_size"], a["examples_to_target"])
                                           for a in reached])]},
      {"title": "Anomaly detection against training compute",
       "x": "training FLOPs (XLA count)", "y": "AUROC (%)", "log_x": False, "log_y": False,
       "series": [page.series(label, [(f, None if a.get(key) is None else 100 * a[key],
                                       f"B={a['batch_size']}") for a, f in flops])
                  for key, label in (("image_auroc", "image AUROC"),
                                     ("pixel_auroc", "pixel AUROC"))]},
      {"title": "Gradient noise scale", "x": "training examples", "y": "B_simple",
       "log_x": False, "log_y": True,
       "series": [page.series(f"B={a['batch_size']}", [
           (p["examples"], p["gradient_noise_scale"]) for p in a["noise_curve"]
           if p["gradient_noise_scale"] is not None and p["gradient_noise_scale"] > 0])
           for a in arms]}]


def write_report(results: dict, out_dir: str) -> None:
  """results.json, results.md, the figures and report.html, written as one group
  (`files.folder_group`)."""
  with files.folder_group(out_dir) as group:
    _write_json(os.path.join(group, "results.json"), results)
    table = results_table(results)
    files.write_text(os.path.join(group, "results.md"), table)
    for name, draw in FIGURES.items():
      plots.save(draw(results), os.path.join(group, name))
    notes = " ".join(line for line in table.splitlines() if line and not line.startswith("|"))
    page.write_safely(os.path.join(group, "report.html"), lambda: page.table_page(
        "scaling", "Scaling study", notes, table, page_plots(results),
        ["results.md", "results.json", *FIGURES]))


def run_scaling(config, workdir: str, dataset: AnomalyDataset) -> dict:
  """Runs (or resumes) every arm, then writes <workdir>/scaling/; returns results.json's content
  ({} on processes > 0)."""
  if dataset.val_images is None or not len(dataset.val_images):
    raise ConfigError("The scaling study's held-out loss needs held-out normal images: set "
                      "--config.data.val_fraction > 0 (e.g. 0.1).")
  arms = plan_arms(config, len(dataset.train_images))
  console.say(f"scaling: {len(arms)} arms (batch sizes {[a['batch_size'] for a in arms]}), "
              f"learning-rate rule {config.scaling.lr_rule}, {config.scaling.budget:g} "
              f"{config.scaling.budget_unit} each")
  records = [run_arm(config, workdir, dataset, arm) for arm in arms]
  if not console.is_main_process():
    return {}
  results = summarize(config, records)
  out_dir = os.path.join(workdir, "scaling")
  write_report(results, out_dir)
  console.say(results_table(results), f"Scaling report written to {out_dir}/ (report.html, "
              f"results.md, results.json, {', '.join(FIGURES)}).")
  return results
