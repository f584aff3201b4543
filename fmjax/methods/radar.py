"""RADAR on the flow U-Net: reconstruction-free anomaly maps from one forward pass.

From the RADAR abstract (Moradi et al., "Reconstruction-free Anomaly Detection with
Attention-based diffusion models in Real-time"; only the abstract is available to
this project): the anomaly map is read directly from the model's prediction in one
forward pass per image, with no reverse sampling and no reconstruction, so no
intermediate noise level is tuned for a reconstruction.

This project's reading, for a flow-matching model (the abstract gives no formulas):
  * noise the test image y once, at one time t (option `t`), with a seed x0 drawn
    from (evaluate.seed, image index): x_t = (1 - t) x0 + t y;
  * convert the velocity into the model's noise prediction: on the path
    x_t = (1 - t) x0 + t x1 with v = x1 - x0, x0 = x_t - t v, so x0_hat = x_t - t v(x_t, t);
  * anomaly map = ||x0_hat - x0||_2 over channels, per pixel (the noise the model
    cannot explain); note x0_hat - x0 = -t (v - (y - x0)), Flow Mismatching's residual at
    one seed and one time, unsquared and scaled by t;
  * option `edge_filter`: the map is replaced by its Sobel gradient magnitude
    (3x3 kernels, edges replicated), which stresses the borders of discrepant regions;
  * image score: Flow Mismatching's rule (max + mean of the top 1%), or with
    `image_score="isolation_forest"` an Isolation Forest (scikit-learn) fitted per
    category on features of the normal training images' maps (max, top-1% mean, mean,
    standard deviation, 99th and 90th percentiles); score = -score_samples, higher is
    more anomalous.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from fmjax.methods import mismatch
from fmjax.methods.base import Scorer, full_times, pixel_norm
from fmjax.methods.settings import SCORER_OPTIONS

IMAGE_SCORES = ("top1", "isolation_forest")
_SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], np.float32)


def sobel_magnitude(maps: jax.Array) -> jax.Array:
  """sqrt(gx^2 + gy^2) of maps [B,H,W] with 3x3 Sobel kernels, borders replicated."""
  padded = jnp.pad(maps, ((0, 0), (1, 1), (1, 1)), mode="edge")
  h, w = maps.shape[1:]
  gx = gy = 0.0
  for i in range(3):
    for j in range(3):
      window = padded[:, i:i + h, j:j + w]
      gx = gx + _SOBEL_X[i, j] * window
      gy = gy + _SOBEL_X.T[i, j] * window
  return jnp.sqrt(gx * gx + gy * gy)


def radar_heatmaps(velocity_fn, y: jax.Array, x0: jax.Array, labels: jax.Array, t: float,
                   edge_filter: bool, *, max_forward_batch: int = 1024) -> jax.Array:
  """||x0_hat - x0||_2 per pixel [B,H,W] for y [B,H,W,C], seeds x0 [B,H,W,C], labels [B]."""
  if not 0.0 < t < 1.0:
    raise ValueError(f"RADAR needs t in (0, 1), got {t}.")

  def chunk_heatmaps(yc, x0c, lc):
    xt = (1.0 - t) * x0c + t * yc
    v = velocity_fn(xt, full_times(yc.shape[0], t), lc).astype(jnp.float32)
    heat = pixel_norm(xt - t * v - x0c)
    return sobel_magnitude(heat) if edge_filter else heat

  return mismatch.map_image_chunks(chunk_heatmaps, y.astype(jnp.float32), x0.astype(jnp.float32),
                                   jnp.asarray(labels, jnp.int32), chunk=max_forward_batch)


def map_features(heatmaps: np.ndarray) -> np.ndarray:
  """Per-image features [N,6] of maps [N,H,W] (or N maps of any sizes): max, top-1% mean, mean,
  std, p99, p90."""
  if isinstance(heatmaps, np.ndarray) and heatmaps.dtype == object:
    return np.concatenate([map_features(np.asarray(m)[None]) for m in heatmaps])
  flat = np.asarray(heatmaps, np.float64).reshape(len(heatmaps), -1)
  k = max(1, math.ceil(0.01 * flat.shape[1]))
  top = -np.sort(-flat, axis=1)[:, :k]
  return np.stack([flat.max(1), top.mean(1), flat.mean(1), flat.std(1),
                   np.percentile(flat, 99, axis=1), np.percentile(flat, 90, axis=1)], axis=1)


def isolation_forest_scores(normal_heatmaps: np.ndarray, seed: int):
  """Fits an Isolation Forest on normal maps' features; returns maps [M,H,W] -> scores [M]."""
  from sklearn.ensemble import IsolationForest  # pylint: disable=g-import-not-at-top
  forest = IsolationForest(n_estimators=200, random_state=seed).fit(map_features(normal_heatmaps))
  return lambda heatmaps: -forest.score_samples(map_features(heatmaps))


def _heatmaps(velocity, y, labels, ids, ctx):
  x0 = ctx.draw_seeds(ids, 1, y.shape[1:])[:, 0]
  return radar_heatmaps(velocity, y, x0, labels, ctx.options["t"], ctx.options["edge_filter"],
                        max_forward_batch=ctx.max_forward_batch)


def _check(options) -> list[str]:
  problems = []
  if not 0.0 < options["t"] < 1.0:
    problems.append(f"evaluate.radar.t must be in (0, 1), got {options['t']}")
  if options["image_score"] not in IMAGE_SCORES:
    problems.append(f"evaluate.radar.image_score must be one of {IMAGE_SCORES}, got "
                    f"{options['image_score']!r}")
  return problems


def _summary(s: dict) -> str:
  edges = ", Sobel edges" if s["edge_filter"] else ""
  rule = ("Isolation Forest on normal training maps" if s["image_score"] == "isolation_forest"
          else "max + top-1% mean")
  return f"one forward pass at t = {s['t']}{edges}; image score: {rule}"


SCORER = Scorer(
    name="radar", title="RADAR", objective="cfm",
    description="one forward pass: the noise the model predicts at one time against the true "
                "noise, no reconstruction",
    heatmaps=_heatmaps, summary=_summary, check=_check, forwards=lambda s: 1,
    image_score_fitter=lambda o: isolation_forest_scores if o["image_score"] == "isolation_forest"
    else None,
    options=SCORER_OPTIONS["radar"])  # t, edge_filter, image_score
