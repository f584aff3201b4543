"""Scores a test split with Flow Mismatching and writes metrics, scores and heatmaps.

Test images are scored in fixed-size batches (the last one padded, so nothing
recompiles) by one jitted function sharded over the "data" mesh axis. Seeds
depend only on (config.evaluate.seed, image index), so scores do not depend on
the batch size or the number of devices.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from fmjax import mismatch, sharding
from fmjax.data import AnomalyDataset, NormStats, load_dataset
from fmjax.metrics import compute_metrics
from fmjax.models.unet import build_unet
from fmjax.progress import Progress
from fmjax.report import write_heatmaps
from fmjax.train import labels_for, load_params_for_eval, prepare_workdir


def make_score_fn(model, norm: NormStats, eval_config, mesh):
  """jitted (params, images uint8 [B,H,W,3], labels [B], ids [B]) -> (heatmaps [B,H,W], scores [B])."""
  key = jax.random.key(eval_config.seed)
  k, t = eval_config.num_seeds, eval_config.num_times
  mismatch.validate_aggregator(eval_config.aggregator, eval_config.quantile)
  times = mismatch.interior_times(t)
  per_device = max(1, eval_config.max_forward_batch)

  def score_local(params, images, labels, ids):
    """This device's images: one flow_mismatch call, chunked to per_device forwards."""
    y = norm.normalize(images)
    x0 = mismatch.draw_seeds(key, ids, k, y.shape[1:])
    velocity = lambda x, tt, lab: model.apply({"params": params}, x, tt, lab)
    return mismatch.flow_mismatch(velocity, y, x0, times, eval_config.aggregator,
                                  eval_config.quantile, labels=labels,
                                  max_forward_batch=per_device)

  spec = jax.sharding.PartitionSpec(sharding.DATA_AXIS)
  score = jax.shard_map(score_local, mesh=mesh, in_specs=(jax.sharding.PartitionSpec(), spec, spec, spec),
                        out_specs=(spec, spec))
  data = sharding.data_sharding(mesh)
  rep = sharding.replicated(mesh)
  return jax.jit(score, in_shardings=(rep, data, data, data), out_shardings=(data, data))


def score_dataset(config, params, dataset: AnomalyDataset, norm: NormStats, mesh):
  """Heatmaps [M,H,W], scores [M] and images/s for the whole test split."""
  ec = config.evaluate
  batch = ec.batch_size
  sharding.check_batch_size(batch, mesh, "evaluate.batch_size")
  model = build_unet(config.model, dataset.num_classes)
  score = make_score_fn(model, norm, ec, mesh)
  data = sharding.data_sharding(mesh)
  rows = sharding.host_slice(batch)
  labels = labels_for(config, dataset.test_classes, dataset.num_classes)
  m = len(dataset.test_images)
  heatmaps, scores = [], []
  progress = Progress(m, f"score K={ec.num_seeds} T={ec.num_times}", "img")
  t0 = None
  for start in range(0, m, batch):
    idx = np.arange(start, start + batch)
    valid = idx < m
    idx = np.where(valid, idx, m - 1)  # pad the last batch by repeating the last image
    h, s = score(params, sharding.to_global(dataset.test_images[idx][rows], data),
                 sharding.to_global(labels[idx][rows], data),
                 sharding.to_global(idx[rows].astype(np.int32), data))
    h, s = jax.device_get((h, s))  # host 0 needs all rows: outputs are fully addressable on 1 host
    heatmaps.append(np.asarray(h)[valid])
    scores.append(np.asarray(s)[valid])
    if t0 is None:
      t0, first = time.time(), int(valid.sum())  # exclude compilation from the rate
    progress.update(int(valid.sum()))
  elapsed = time.time() - t0
  timed = m - first
  images_per_s = timed / elapsed if timed > 0 and elapsed > 0 else float("nan")
  return np.concatenate(heatmaps), np.concatenate(scores), images_per_s


def evaluate(config, workdir: str, dataset: AnomalyDataset | None = None) -> dict:
  """Scores the test split with the latest checkpoint; writes <workdir>/metrics.json and pictures."""
  prepare_workdir(workdir)
  dataset = dataset if dataset is not None else load_dataset(config.data)
  params, step, norm = load_params_for_eval(config, workdir, dataset, config.evaluate.use_ema)
  mesh = sharding.make_mesh(config.mesh.num_devices)
  heatmaps, scores, images_per_s = score_dataset(config, params, dataset, norm, mesh)

  masks = dataset.test_masks
  overall = compute_metrics(scores, dataset.test_labels, heatmaps, masks)
  per_category = {}
  for ci, name in enumerate(dataset.class_names):
    sel = dataset.test_classes == ci
    per_category[name] = compute_metrics(scores[sel], dataset.test_labels[sel], heatmaps[sel],
                                         None if masks is None else masks[sel])
  ec = config.evaluate
  result = {
      **overall,
      "per_category": per_category,
      "settings": {"num_seeds": ec.num_seeds, "num_times": ec.num_times,
                   "aggregator": ec.aggregator, "quantile": ec.quantile,
                   "checkpoint_step": int(step), "images_per_s": images_per_s,
                   "num_test_images": int(len(scores)), "seed": ec.seed},
      "images": [{"path": p, "category": dataset.class_names[c], "defect": d, "label": int(l),
                  "score": float(s)}
                 for p, c, d, l, s in zip(dataset.test_paths, dataset.test_classes,
                                          dataset.test_defects, dataset.test_labels, scores)],
  }
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
      json.dump(result, f, indent=1)
    write_heatmaps(os.path.join(workdir, "heatmaps"), dataset, heatmaps, scores, norm,
                   config.evaluate.num_heatmaps)
    _print_summary(result, dataset)
  return result


def _print_summary(result: dict, dataset: AnomalyDataset) -> None:
  keys = [k for k in ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap",
                      "pixel_f1_max", "pixel_aupro") if k in result]
  print("category      " + " ".join(f"{k:>13s}" for k in keys))
  rows = list(result["per_category"].items()) + [("mean/overall", result)]
  for name, m in rows:
    print(f"{name:13s} " + " ".join(f"{100 * m[k]:13.1f}" for k in keys))
  s = result["settings"]
  print(f"K={s['num_seeds']} T={s['num_times']} aggregator={s['aggregator']} "
        f"step={s['checkpoint_step']} {s['images_per_s']:.2f} images/s", flush=True)
