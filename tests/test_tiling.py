"""Images of any size: stride padding, tiles, blending, positional seeds and smoothing."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import scipy.stats

from fmjax import configlib
from fmjax.core import sharding
from fmjax.core.errors import ConfigError
from fmjax.core.ids import image_ids
from fmjax.data import NormStats
from fmjax.methods import mismatch
from fmjax.model.unet import build_unet, init_params
from fmjax.score import maps, scoring, tiling

from conftest import tiny_config

NORM = NormStats((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))


class PixelModel:
  """A velocity field that acts on each pixel alone (no neighbours): v = f(x, t, label) per
  pixel, nonlinear, so any tiling must give the whole image's heatmap."""
  channel_mult = (1, 2, 2)  # stride 4

  def apply(self, variables, x, t, labels):
    a = variables["params"]["a"]
    tb = t[:, None, None, None]
    return jnp.tanh(a * x) * (1.0 + tb) + 0.3 * labels[:, None, None, None] - x * tb


def _score(model, params, images, eval_overrides, labels=None, mesh=None, batch=None):
  """Heatmaps and scores of `images` through the evaluator's loop (tiles cut and blended on the
  host), on `mesh` (default: one device) in batches of `batch` tiles (default: 2)."""
  config = tiny_config()
  ec = config.evaluate
  ec.num_seeds, ec.num_times = 3, 2
  for key, value in eval_overrides.items():
    ec[key] = value
  n = len(images)
  labels = np.zeros(n, np.int32) if labels is None else labels
  mesh = sharding.make_mesh(1) if mesh is None else mesh
  score = scoring.make_score_fn(model, NORM, ec, mesh)
  heat, scores, _ = scoring.score_in_batches(score, params, images, labels, batch or 2, mesh,
                                             "test", ec, tiling.model_stride(model))
  return heat, scores


def _images(n, h, w, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("length,tile,overlap", [(40, 16, 4), (37, 16, 4), (64, 16, 0),
                                                 (23, 8, 7), (16, 32, 8), (100, 36, 9)])
def test_tiles_cover_the_side_and_weights_sum_to_one(length, tile, overlap):
  starts = tiling.tile_starts(length, min(tile, length), overlap)
  side = min(tile, length)
  assert starts[0] == 0 and starts[-1] + side == length  # from edge to edge, never outside
  assert all(b - a <= side - overlap for a, b in zip(starts, starts[1:]))  # at least `overlap`
  grid = tiling.tile_grid(length, length + 5, tile, overlap)  # and a non-square image
  total = np.zeros((grid.height, grid.width), np.float64)
  for (iy, y0), (ix, x0) in itertools.product(enumerate(grid.ys), enumerate(grid.xs)):
    w = grid.weight(iy, ix)
    assert w.shape == (grid.tile_h, grid.tile_w) and (w > 0).all()
    total[y0:y0 + grid.tile_h, x0:x0 + grid.tile_w] += w
  np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_a_tile_larger_than_the_image_is_the_whole_image():
  grid = tiling.tile_grid(24, 40, 64, 16)
  assert grid.num_tiles == 1 and (grid.tile_h, grid.tile_w) == (24, 40)
  np.testing.assert_array_equal(grid.weight(0, 0), 1.0)
  # The scorer pads such an image (by reflection) to one tile, so every tile has one shape,
  # and crops the tile's heatmap back to the image.
  image = _images(1, 22, 37)[0]
  tiler = tiling.Tiler([image.shape], 4, 64, 16)
  (tile,) = tiler.tiles()
  (pixels,) = tiler.cut([image], [tile])
  assert pixels.shape == (64, 64, 3) and np.array_equal(pixels[:22, :37], image)
  np.testing.assert_array_equal(pixels[22:43, :37], image[20::-1])  # rows 20, 19, .., 0 reflected
  heat = np.arange(64 * 64, dtype=np.float32).reshape(1, 64, 64)
  ((index, whole),) = tiler.add([tile], heat)
  assert index == 0 and np.array_equal(whole, heat[0, :22, :37])


def test_positional_seeds_are_the_whole_images_cut_to_the_tile_and_normal():
  key, ids = jax.random.key(3), jnp.array([5, 9])
  whole = np.asarray(mismatch.positional_seeds(key, ids, 4, (24, 40, 3), jnp.zeros((2, 2), int)))
  tile = np.asarray(mismatch.positional_seeds(key, ids, 4, (8, 12, 3),
                                              jnp.array([[13, 27], [2, 5]])))
  np.testing.assert_array_equal(tile[0], whole[0, :, 13:21, 27:39])
  np.testing.assert_array_equal(tile[1], whole[1, :, 2:10, 5:17])
  assert not np.array_equal(whole[0], whole[1])  # images differ, and so do seeds k
  assert not np.array_equal(whole[:, 0], whole[:, 1])
  assert scipy.stats.kstest(whole.ravel(), "norm").pvalue > 1e-3  # a standard normal
  assert abs(np.corrcoef(whole[0, 0, :, :-1].ravel(), whole[0, 0, :, 1:].ravel())[0, 1]) < 0.05


@pytest.mark.parametrize("shape", [(24, 40), (22, 37)])  # non-square; not multiples of 4 either
def test_tiled_scoring_equals_whole_image_scoring_for_a_per_pixel_field(shape):
  model, params = PixelModel(), {"a": jnp.float32(1.7)}
  images = _images(2, *shape)
  whole_h, whole_s = _score(model, params, images, {"tile_size": 64})  # one tile: the whole image
  for tile, overlap in [(8, 4), (12, 0), (16, 8)]:
    heat, scores = _score(model, params, images, {"tile_size": tile, "tile_overlap": overlap})
    assert heat.shape == (2,) + shape
    np.testing.assert_allclose(heat, whole_h, rtol=2e-6, atol=1e-7)  # float rounding of sum(w)=1
    np.testing.assert_allclose(scores, whole_s, rtol=2e-6)
  # The oracle: for a per-pixel field, the heatmap is the mismatch of each pixel with its own
  # seeds, computed here directly in numpy from the same positional seeds.
  y = NORM.normalize(np.stack([tiling.pad_to_stride(im, 4) for im in images]))
  ids = image_ids(images)
  x0 = np.asarray(mismatch.positional_seeds(jax.random.key(0), jnp.asarray(ids), 3, y.shape[1:],
                                            jnp.zeros((2, 2), int)))
  expected = np.zeros(y.shape[:3])
  for t in (1 / 3, 2 / 3):
    xt = (1 - t) * x0 + t * y[:, None]
    v = np.tanh(1.7 * xt) * (1 + t) - xt * t
    z = np.sum((v - (y[:, None] - x0)) ** 2, axis=-1).min(axis=1)
    expected += t * t * z / 2
  np.testing.assert_allclose(whole_h, expected[:, :shape[0], :shape[1]], rtol=1e-4, atol=1e-5)


def _random_unet():
  """The tests' tiny U-Net (stride 2, attention at rate 2) with every weight random, so that its
  output is not the zero of a freshly initialised output layer."""
  config = tiny_config()
  model = build_unet(config.model, 3)
  params = init_params(model, jax.random.key(0), (16, 16, 3))
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  leaves = [0.1 * jax.random.normal(k, p.shape) + (p if p.ndim == 1 else 0) for k, p in zip(keys, leaves)]
  return model, jax.tree.unflatten(tree, leaves)


def test_a_unet_tile_matches_the_whole_image_inside_the_tile():
  """A U-Net tile cannot equal the whole image exactly: GroupNorm normalises each tile by its own
  statistics, attention sees only the tile's positions, and the convolutions see zeros past the
  tile's edge. Tolerance, measured for this random-weight U-Net (more sensitive than a trained
  one): on each 32-pixel tile's interior (8-pixel margin) the relative L2 difference to the
  whole image's heatmap is about 0.11 and its correlation with it 0.98. The test allows 0.2 and
  0.95; two different images differ by about 0.87, so the bound still separates."""
  model, params = _random_unet()
  images = _images(2, 64, 64, seed=1)
  whole, _ = _score(model, params, images, {"tile_size": 64})  # one tile: the whole image
  tiled, _ = _score(model, params, images, {"tile_size": 32, "tile_overlap": 0})
  grid = tiling.tile_grid(64, 64, 32, 0)
  assert grid.num_tiles == 4
  m = 8
  for y0, x0 in itertools.product(grid.ys, grid.xs):
    inner = np.s_[:, y0 + m:y0 + 32 - m, x0 + m:x0 + 32 - m]
    rel = np.linalg.norm(tiled[inner] - whole[inner]) / np.linalg.norm(whole[inner])
    assert rel < 0.2, (y0, x0, rel)
  assert np.corrcoef(tiled.ravel(), whole.ravel())[0, 1] > 0.95
  assert np.linalg.norm(whole[0] - whole[1]) / np.linalg.norm(whole[0]) > 0.5


def test_tiled_scores_do_not_depend_on_devices_or_batching():
  model, params = _random_unet()
  images = _images(8, 20, 28, seed=2)
  overrides = {"tile_size": 8, "tile_overlap": 2}
  base_h, base_s = _score(model, params, images, overrides, mesh=sharding.make_mesh(1), batch=1)
  for devices, batch, forward in [(8, 8, 400), (2, 4, 7), (1, 3, 1)]:
    h, s = _score(model, params, images, {**overrides, "max_forward_batch": forward},
                  mesh=sharding.make_mesh(devices), batch=batch)
    np.testing.assert_allclose(h, base_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s, base_s, rtol=1e-5)
  # The order of the images does not matter either: seeds come from the content.
  order = np.arange(8)[::-1]
  h, _ = _score(model, params, images[order], overrides, mesh=sharding.make_mesh(2), batch=2)
  np.testing.assert_allclose(h, base_h[order], rtol=1e-5, atol=1e-6)


def test_image_score_is_the_max_plus_the_mean_of_the_top_percent():
  rng = np.random.default_rng(4)
  for shape in [(7, 9), (16, 16), (40, 30)]:
    heat = rng.random(shape).astype(np.float32)
    k = int(np.ceil(0.01 * heat.size))
    top = sorted(heat.ravel().tolist(), reverse=True)[:k]
    assert maps.image_score(heat) == pytest.approx(top[0] + sum(top) / k, rel=1e-6)
    assert maps.image_score(heat) == pytest.approx(
        float(mismatch.image_score(jnp.asarray(heat[None]))[0]), rel=1e-6)  # the kernel's


def test_smoothing_in_evaluation_is_scipys_before_the_image_score():
  model, params = PixelModel(), {"a": jnp.float32(0.9)}
  images = _images(3, 20, 36, seed=5)
  raw, _ = _score(model, params, images, {})
  for overrides, sigma in [({"smoothing_sigma": 1.5}, 1.5),
                           ({"smoothing_sigma_fraction": 0.1}, 2.0),  # of the shorter side, 20
                           ({"smoothing_sigma": 1.0, "tile_size": 8}, 1.0)]:
    unsmoothed = raw if "tile_size" not in overrides else _score(
        model, params, images, {"tile_size": 8})[0]
    heat, scores = _score(model, params, images, overrides)
    expected = np.stack([scipy.ndimage.gaussian_filter(m.astype(np.float64), sigma)
                         for m in unsmoothed])
    np.testing.assert_allclose(heat, expected, rtol=1e-5, atol=1e-6)
    flat = np.sort(expected.reshape(3, -1), axis=1)[:, ::-1]
    top = flat[:, :int(np.ceil(0.01 * flat.shape[1]))]
    np.testing.assert_allclose(scores, top[:, 0] + top.mean(1), rtol=1e-5)


def test_default_scoring_is_unchanged_and_geometry_is_recorded_only_when_set():
  from fmjax import methods
  ec = tiny_config().evaluate
  assert set(methods.scorer_options(ec)) == {"num_seeds", "num_times", "aggregator", "quantile"}
  ec.tile_size, ec.smoothing_sigma = 8, 1.0
  options = methods.scorer_options(ec)
  assert (options["tile_size"], options["tile_overlap"], options["smoothing_sigma"]) == (8, -1, 1.0)


@pytest.mark.parametrize("overrides,message", [
    ({"evaluate.tile_size": 30}, "evaluate.tile_size 30 must be a multiple of the model's stride 4 "
                                 "(nearest valid: 28 or 32)"),
    ({"evaluate.tile_size": 32, "evaluate.tile_overlap": 32}, "evaluate.tile_overlap 32 must be in"),
    ({"evaluate.smoothing_sigma": -1.0}, "evaluate.smoothing_sigma must be >= 0"),
    ({"evaluate.smoothing_sigma": 1.0, "evaluate.smoothing_sigma_fraction": 0.1}, "not both"),
])
def test_bad_tiles_and_smoothing_are_refused_in_one_line(overrides, message):
  config = configlib.base_config()
  config.model.channel_mult = (1, 2, 2)
  for key, value in overrides.items():
    section, name = key.split(".")
    config[section][name] = value
  with pytest.raises(ConfigError) as e:
    configlib.validate(config)
  assert message in str(e.value)


def test_an_image_above_the_pixel_limit_is_refused_naming_the_limit():
  with pytest.raises(ConfigError, match=r"20000x20000 = 400.0 megapixels is above "
                                        r"evaluate.max_image_pixels = 50.0 megapixels"):
    tiling.check_image_size(20000, 20000, 50_000_000)
  tiling.check_image_size(20000, 20000, 0)  # 0: no limit
