"""What a scoring method and a training objective are: one object each, in its own module.

A `Scorer` turns test images into heatmaps with a trained velocity model; an
`Objective` is the loss a model is trained with. Both carry their name (the
config value), a title and a one-line description for reports, and their
options with defaults, stated once in `fmjax.methods.settings` (without JAX) and
placed in the config at `evaluate.<name>.*` (scorers) or `train.<name>.*`
(objectives) by `fmjax.configlib.base_config`.

The velocity signature is the same everywhere:
  velocity(x [N,H,W,C] float32, t [N] float32, labels [N] int32) -> v [N,H,W,C]
(pooled models are passed the null label). Images are normalised NHWC float32.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from fmjax.methods import mismatch
from fmjax.methods.mismatch import map_image_chunks

Velocity = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
# Shared evaluate keys a scorer may read; the rest of its options live under evaluate.<name>.
SHARED_KEYS = {"num_seeds": "K", "num_times": "T"}


@dataclasses.dataclass(frozen=True)
class ScoreContext:
  """The settings a scorer's heatmap function sees (Python values, fixed at trace time)."""
  key: jax.Array  # the scoring seed; seeds of image i come from fold_in(key, i)
  num_seeds: int  # K
  num_times: int  # T
  max_forward_batch: int  # samples per velocity call, per device
  options: Mapping[str, Any]  # evaluate.<name>.* as a plain dict
  # None: seeds per image (fold_in(key, id)); else each tile's (row, column) origin in its
  # image (int32 [B,2]): seeds per pixel position (`mismatch.positional_seeds`), so tiles of
  # one image see the noise of the whole image.
  origins: Any = None

  def draw_seeds(self, ids: jax.Array, num: int, image_shape) -> jax.Array:
    """Seeds [B,num,H,W,C] for images (or tiles) [B,H,W,C] with global ids [B]."""
    if self.origins is None:
      return mismatch.draw_seeds(self.key, ids, num, image_shape)
    return mismatch.positional_seeds(self.key, ids, num, image_shape, self.origins)


@dataclasses.dataclass(frozen=True)
class Scorer:
  """A scoring method.

  `heatmaps(velocity, y [B,H,W,C], labels [B], ids [B], ctx) -> [B,H,W]` is jittable;
  image scores are max + mean of the top 1% of each heatmap (Flow Mismatching's
  rule) unless `image_score_fitter(options)` returns a fitter: then, on the host and
  per category, `fitter(normal_heatmaps [N,H,W], seed)` (the heatmaps of normal
  training images) returns a function heatmaps [M,H,W] -> scores [M].
  """
  name: str
  title: str
  objective: str  # the training objective of the models it scores
  description: str
  heatmaps: Callable[..., jax.Array]
  summary: Callable[[dict], str]  # settings (used shared keys + options) -> words for reports
  forwards: Callable[[dict], float]  # velocity evaluations per image (a backward counts 2)
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  uses: tuple[str, ...] = ()  # the SHARED_KEYS it reads
  check: Callable[[Mapping[str, Any]], list[str]] = lambda options: []
  image_score_fitter: Callable[[Mapping[str, Any]], Callable | None] = lambda options: None

  def default_options(self) -> dict:
    return copy.deepcopy(dict(self.options))


@dataclasses.dataclass(frozen=True)
class Objective:
  """A training objective: `loss(velocity, x1 [N,H,W,C], labels [N], key, **options) -> scalar`.

  Noise and times are drawn for the whole (global) batch from `key`, so the loss
  does not depend on how the batch is sharded.
  """
  name: str
  title: str
  description: str
  loss: Callable[..., jax.Array]
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  check: Callable[[Mapping[str, Any]], list[str]] = lambda options: []

  def default_options(self) -> dict:
    return copy.deepcopy(dict(self.options))


def pixel_norm(a: jax.Array) -> jax.Array:
  """Per-pixel L2 norm over channels: [...,H,W,C] -> [...,H,W]."""
  return jnp.sqrt(jnp.sum(jnp.square(a), axis=-1))


def one_pass_heatmaps(heat_fn, y: jax.Array, labels: jax.Array, max_forward_batch: int):
  """heat_fn(y_chunk [c,H,W,C], labels_chunk [c]) -> [c,H,W] over image chunks of at most
  `max_forward_batch` images (for scorers with one velocity call per image)."""
  return map_image_chunks(heat_fn, y.astype(jnp.float32), jnp.asarray(labels, jnp.int32),
                          chunk=max_forward_batch)


def full_times(n: int, t: float) -> jax.Array:
  """t repeated: [n] float32."""
  return jnp.full((n,), t, jnp.float32)
