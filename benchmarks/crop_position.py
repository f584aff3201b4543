"""Should a training crop's position condition the velocity field? A measurement (issue 24).

  python benchmarks/crop_position.py --config=configs/cpu_bottle.py --config.data.image_size=64
  python benchmarks/crop_position.py --config=configs/cpu_bottle.py --config.data.image_size=64 \
      --config.data.name=folder --config.data.root=../shared/data/mtd \
      --config.data.categories=magnetic_tile

Trains the config's U-Net from the same initialisation seed with the same optimiser, steps,
batch and seeds in up to three arms, and scores each on the whole test images as --mode=evaluate
scores them (`ScoringSession.score_split`: the config's scorer, K, T, seeds and smoothing):

- `whole`: whole training images (`data.image_size`), as the default recipe trains;
- `crop`: random `--crop` x `--crop` crops, as `data.crop_size` trains: the model never sees
  where a crop lies in its image;
- `position`: the same crops, with two more input channels holding each pixel's position in
  its image ((row + 0.5) / height and (column + 0.5) / width, mapped to [-1, 1]); scored with
  the whole image's grid (CoordConv-style position conditioning).

Crops are a pure function of (seed, step) and identical in `crop` and `position`, so the two
differ only in the position channels. One JSON line per arm (metrics in percent, training and
scoring seconds) and a Markdown table.
"""

from __future__ import annotations

import time

from fmjax.core import xla_cpu

xla_cpu.apply_defaults()  # fmjax's XLA:CPU settings, before jax is imported

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/cpu_bottle.py", "The recipe (model, "
                                "optimiser, steps, batch, data, scorer).", lock_config=False)
flags.DEFINE_integer("crop", 32, "Side of the training crops (a multiple of the model's stride).")
flags.DEFINE_string("arms", "whole,crop,position", "Comma-separated arms to run.")
flags.DEFINE_string("output", "", "Also append the JSON lines to this file.")

ARMS = ("whole", "crop", "position")
COLUMNS = (("image_auroc", "I-AUROC"), ("pixel_auroc", "P-AUROC"), ("pixel_aupro", "PRO"),
           ("pixel_ap", "P-AP"))


def position_channels(offsets, crop_h: int, crop_w: int, height: int, width: int):
  """float32 [B,crop_h,crop_w,2]: each pixel's (row, column) position in its [height,width]
  image, (index + 0.5) / side mapped to [-1, 1], for crops whose top-left corners are offsets
  [B,2]."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  rows = (offsets[:, 0, None].astype(jnp.float32) + jnp.arange(crop_h) + 0.5) / height * 2 - 1
  cols = (offsets[:, 1, None].astype(jnp.float32) + jnp.arange(crop_w) + 0.5) / width * 2 - 1
  shape = (offsets.shape[0], crop_h, crop_w)
  return jnp.stack([jnp.broadcast_to(rows[:, :, None], shape),
                    jnp.broadcast_to(cols[:, None, :], shape)], axis=-1)


def batch_at(step: int, seed: int, images, labels, batch: int, crop: int):
  """(uint8 images [B,c,c,3], model labels [B], offsets int32 [B,2]) of training step `step`: indices
  and crop corners from numpy's generator seeded with (seed, step), a pure function of both."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng([seed, step])
  idx = rng.integers(0, len(images), batch)
  h, w = images.shape[1:3]
  if crop >= min(h, w):
    return images[idx], labels[idx], np.zeros((batch, 2), np.int32)
  offsets = np.stack([rng.integers(0, h - crop + 1, batch), rng.integers(0, w - crop + 1, batch)],
                     axis=1).astype(np.int32)
  out = np.stack([images[i, y:y + crop, x:x + crop] for i, (y, x) in zip(idx, offsets)])
  return out, labels[idx], offsets


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  import bench_util  # pylint: disable=g-import-not-at-top
  from fmjax.core import sharding  # pylint: disable=g-import-not-at-top
  from fmjax.data import load_dataset  # pylint: disable=g-import-not-at-top
  from fmjax.data.dataset import NormStats  # pylint: disable=g-import-not-at-top
  from fmjax.model import flow  # pylint: disable=g-import-not-at-top
  from fmjax.model.optim import build_optimizer  # pylint: disable=g-import-not-at-top
  from fmjax.model.unet import build_unet  # pylint: disable=g-import-not-at-top
  from fmjax.report.metrics import compute_metrics  # pylint: disable=g-import-not-at-top
  from fmjax.score.session import ScoringSession  # pylint: disable=g-import-not-at-top
  from fmjax.train.restore import class_labels  # pylint: disable=g-import-not-at-top

  class WithPositions:
    """The U-Net with `channels` (position channels, broadcast over the leading axes of x)
    appended to its input: x [...,H,W,3] -> v [...,H,W,3]."""

    def __init__(self, model, channels):
      self.model, self.channels = model, channels

    def apply(self, variables, x, *args, **kwargs):
      extra = jnp.broadcast_to(self.channels, x.shape[:-1] + (2,))
      return self.model.apply(variables, jnp.concatenate([x, extra], axis=-1), *args, **kwargs)

  config = FLAGS.config
  arms = [a.strip() for a in FLAGS.arms.split(",") if a.strip()]
  unknown = sorted(set(arms) - set(ARMS))
  if unknown:
    raise app.UsageError(f"--arms: unknown {unknown}; choose from {', '.join(ARMS)}.")
  dataset = load_dataset(config.data)
  if dataset.train_images.dtype == object:
    raise app.UsageError("This measurement needs images of one size (data.resize=square).")
  height, width = dataset.train_images.shape[1:3]
  crop = FLAGS.crop
  norm = NormStats.of(dataset.train_images)
  model = build_unet(config.model, len(dataset.class_names))
  optimizer = build_optimizer(config.train)
  mesh = sharding.make_mesh(config.mesh.num_devices)
  seed, steps, batch = int(config.seed), int(config.train.num_steps), int(config.train.batch_size)
  train_labels = class_labels(config, dataset.train_classes, len(dataset.class_names))
  full_grid = position_channels(jnp.zeros((1, 2), jnp.int32), height, width, height, width)[0]
  rows = []
  for arm in arms:
    side = min(height, width) if arm == "whole" else crop
    with_position = arm == "position"
    in_channels = 5 if with_position else 3
    params = model.init(jax.random.key(seed), jnp.zeros((1, side, side, in_channels)),
                        jnp.zeros((1,)), jnp.zeros((1,), jnp.int32))["params"]
    opt_state = optimizer.init(params)

    def train_step(params, opt_state, images, labels, offsets, step, with_position=with_position,
                   side=side):
      x1 = norm.normalize(images)
      net = (WithPositions(model, position_channels(offsets, side, side, height, width))
             if with_position else model)

      def loss_fn(p):
        velocity = lambda x, t, lab: net.apply(
            {"params": p}, x, t, lab, train=True,
            rngs={"dropout": jax.random.fold_in(jax.random.key(seed + 1), step)})
        return flow.cfm_loss(velocity, x1, labels, jax.random.fold_in(jax.random.key(seed), step))

      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss

    step_fn = jax.jit(train_step, donate_argnums=(0, 1))
    start = time.perf_counter()
    losses = []
    for step in range(steps):
      images, labels, offsets = batch_at(step, seed, dataset.train_images, train_labels, batch,
                                         side)
      params, opt_state, loss = step_fn(params, opt_state, images, labels, offsets, step)
      if (step + 1) % max(1, steps // 5) == 0:
        losses.append(round(float(loss), 4))
        print(f"{arm}: step {step + 1}/{steps} loss {losses[-1]}", flush=True)
    jax.block_until_ready(params)
    train_seconds = time.perf_counter() - start

    # Scored as --mode=evaluate scores: the same session, seeds, batches and post-processing.
    session = ScoringSession(config, params, norm, dataset.class_names, steps, mesh)
    if with_position:
      session.model = WithPositions(session.model, full_grid)
    start = time.perf_counter()
    heatmaps, scores, _ = session.score_split(dataset, "test", what=arm)
    score_seconds = time.perf_counter() - start
    metrics = compute_metrics(scores, dataset.test_labels,
                              None if dataset.test_masks is None else heatmaps, dataset.test_masks)
    row = {"benchmark": "crop_position", "arm": arm, "data": config.data.root,
           "categories": list(dataset.class_names), "image_size": [int(height), int(width)],
           "train_side": int(side), "num_test_images": len(scores), "steps": steps, "batch": batch,
           "final_losses": losses,
           "num_seeds": int(config.evaluate.num_seeds), "num_times": int(config.evaluate.num_times),
           "train_seconds": round(train_seconds, 1), "score_seconds": round(score_seconds, 1),
           **{k: round(100 * float(metrics[k]), 2) for k, _ in COLUMNS if k in metrics},
           **bench_util.environment()}
    bench_util.emit(row, FLAGS.output)
    rows.append(row)
  print(bench_util.metrics_table(
      rows, [("arm", lambda r: r["arm"]),
             ("trained on", lambda r: f"{r['train_side']}x{r['train_side']}")], COLUMNS))


if __name__ == "__main__":
  app.run(main)
