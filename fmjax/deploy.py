"""Scoring with an exported scorer (`--mode=export`): jax and numpy only.

  scorer = fmjax.deploy.load("runs/bottle/export")
  result = scorer(images, category="bottle")   # uint8 [B,H,W,3], or a list of [H_i,W_i,3]
  result.heatmaps [B,H,W] float32 (an object array of [H_i,W_i] for mixed sizes), result.scores [B] float32,
  result.decisions [B] bool or None, result.normalised [B] in [0, 1] (0.5: the threshold) or None

An export made with evaluate.tile_size > 0 scores images of any size (cut into its tiles and
blended as in evaluation); one made without scores images of its data.image_size.

  python -m fmjax.deploy <export dir> <image or folder> [--category=C] [--out=DIR]

The command prints one line per image (path, score, decision and normalised score, width x
height) and writes into --out a heatmap picture per image and scores.csv (path, category,
the file's width and height, score, decision, normalised score, mask, number of regions);
with a calibrated pixel threshold also <stem>_mask.png per image (0 or 255 at the file's size:
the heatmap enlarged to it, above the threshold) and regions.json (their 8-connected regions:
area, bounding box, peak and mean score; `fmjax.decide.regions`). Files are read at the size
training read them (`data.resize`).
Neither loading nor scoring imports Flax, the model code or a checkpoint. An ONNX export
(export.format=onnx: model.onnx) runs on onnxruntime, or on OpenVINO with `--runtime=openvino`
(`load(..., runtime="openvino", precision="f32" | "bf16")`; bf16 uses the CPU's bf16
instructions where it has them), and does not import jax: its seeds are computed in numpy
(`fmjax.core.threefry`), the ones evaluation draws.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
import zipfile

from fmjax.core import xla_cpu

xla_cpu.apply_defaults()  # before jax (StableHLO exports): its XLA:CPU settings

import numpy as np  # noqa: E402

from fmjax.core import console, ragged, threefry
from fmjax.core.ids import image_ids
from fmjax.decide import normalize, regions
from fmjax.score import maps, tiling


class DeployError(ValueError):
  """An export that cannot serve this call (wrong folder, image size, platform, category)."""


@dataclasses.dataclass
class Scored:
  heatmaps: np.ndarray  # float32 [B,H,W], or an object array of [H_i,W_i] for mixed sizes
  scores: np.ndarray  # float32 [B]
  decisions: np.ndarray | None  # bool [B] (True: anomalous); None without a threshold
  threshold: float | None
  threshold_kind: str
  normalised: np.ndarray | None = None  # float64 [B] in [0, 1], 0.5 at the threshold; None
  # without a calibrated scale (fmjax.decide.normalize)


def _params(path: str, manifest: dict, exported) -> list[np.ndarray]:
  """params.npz's arrays, checked against manifest.json and the exported function's inputs."""
  npz_path = os.path.join(path, "params.npz")
  again = "export again (--mode=export)"
  try:
    with np.load(npz_path) as npz:
      names = sorted(npz.files)
      params = [npz[n] for n in names]
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise DeployError(f"Cannot read {npz_path} ({str(e).splitlines()[0][:200] or type(e).__name__}): "
                      f"{again}.") from None
  expected = [f"leaf_{i:05d}" for i in range(manifest["num_param_arrays"])]
  if names != expected:
    raise DeployError(f"{npz_path} holds {len(names)} arrays, manifest.json says "
                      f"{manifest['num_param_arrays']}: the files are of different exports; {again}.")
  for i, (array, aval) in enumerate(zip(params, exported.in_avals)):
    if tuple(array.shape) != tuple(aval.shape) or array.dtype != aval.dtype:
      raise DeployError(f"{npz_path} array leaf_{i:05d} is {array.dtype}{list(array.shape)}, "
                        f"scorer.jax takes {aval.dtype}{list(aval.shape)}: the files are of "
                        f"different exports; {again}.")
  return params


def _bucket(n: int, unit: int, limit: int) -> int:
  """The batch a call of n rows is padded to: `unit` times a power of two, at most `limit`
  (never below n rounded up to a multiple of `unit`), so that a few batch shapes serve every
  call and padding costs at most 2x."""
  size = unit
  while size < n and size < limit:
    size *= 2
  return -(-max(min(size, limit), n) // unit) * unit


def _pad_rows(arrays, size: int) -> list[np.ndarray]:
  """Each array [n,...] with its last row repeated up to `size` rows (results of the repeats
  are dropped after)."""
  return [np.concatenate([a, np.repeat(a[-1:], size - len(a), 0)]) if size > len(a) else a
          for a in arrays]


class StableHLOTiles:
  """scorer.jax and params.npz on JAX devices (data-parallel under shard_map on several):
  (tiles uint8 [n,h,w,3], category indices [n], ids [n], origins [n,2]) -> heatmaps [n,h,w]."""

  def __init__(self, path: str, manifest: dict, devices):
    import jax
    self._jax, self.devices = jax, devices
    self.runtime = f"jax {jax.__version__}"
    self._conditional, self._null = manifest["class_conditional"], manifest["null_label"]
    with open(os.path.join(path, "scorer.jax"), "rb") as f:
      exported = jax.export.deserialize(bytearray(f.read()))
    params = _params(path, manifest, exported)
    self.batch = 8 * len(devices)  # tiles per call
    if len(devices) > 1:  # data-parallel: the exported one-device function under shard_map
      mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
      rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
      self._data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
      spec = jax.sharding.PartitionSpec("data")
      self._call = jax.jit(jax.shard_map(exported.call, mesh=mesh,
                                         in_specs=(jax.sharding.PartitionSpec(), spec, spec, spec,
                                                   spec),
                                         out_specs=spec))
      self._params = jax.device_put(params, rep)
    else:
      self._data = devices[0]
      self._call = jax.jit(exported.call)
      self._params = jax.device_put(params, devices[0])

  def bucket(self, n: int) -> int:
    """The batch a call of n tiles is padded to: the devices times a power of two (at most
    `batch`); each new shape compiles anew."""
    return _bucket(n, len(self.devices), self.batch)

  def __call__(self, tiles, category, ids, origins) -> np.ndarray:
    jax = self._jax
    n = len(tiles)
    labels = np.asarray(category, np.int32) if self._conditional else np.full(n, self._null, np.int32)
    arrays = _pad_rows([tiles, labels, ids, origins], self.bucket(n))
    put = lambda x: jax.device_put(x, self._data)
    return np.asarray(jax.device_get(self._call(self._params, *(put(a) for a in arrays))))[:n]


def _onnx_model(path: str) -> str:
  """`path`/model.onnx; DeployError when an ONNX export lacks it."""
  model = os.path.join(path, "model.onnx")
  if not os.path.isfile(model):
    raise DeployError(f"{path} is an ONNX export without model.onnx: export it again.")
  return model


def _load_error(model: str, runtime: str, error: Exception) -> DeployError:
  """A runtime's refusal of `model` (its own exception types: a damaged or foreign file), as
  one line."""
  return DeployError(f"Cannot load {model}{runtime}: {str(error).strip().splitlines()[0][:300]}")


class OnnxTiles:
  """model.onnx on onnxruntime, fed the seeds evaluation draws (`fmjax.core.threefry`):
  (tiles uint8 [n,h,w,3], category indices [n], ids [n], origins [n,2]) -> heatmaps [n,h,w]
  (its tile_heatmaps output)."""

  def __init__(self, path: str, manifest: dict, threads: int = 0):
    try:
      import onnxruntime
    except ImportError as e:
      raise DeployError(f"{path} is an ONNX export and needs onnxruntime ({e}): "
                        "pip install onnxruntime.") from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    options.intra_op_num_threads = threads  # 0: onnxruntime's choice (the physical cores)
    model = _onnx_model(path)
    try:
      self.session = onnxruntime.InferenceSession(model, options,
                                                  providers=["CPUExecutionProvider"])
    except Exception as e:  # pylint: disable=broad-except
      raise _load_error(model, "", e) from None
    self.runtime = f"onnxruntime {onnxruntime.__version__}"
    self._init_common(manifest, [o.name for o in self.session.get_outputs()])

  def _init_common(self, manifest: dict, output_names) -> None:
    # Images per run: the graph has no loops, so its memory grows with the batch (exports
    # before the key looped over images one at a time and took batches of 8).
    self.devices, self.batch = [], int(manifest.get("onnx", {}).get("images_per_call", 8))
    # Whole-image exports give the finished heatmaps and scores (smoothed in the graph), so the
    # host needs neither scipy nor its own smoothing for them.
    self.finishes = "scores" in list(output_names)
    self.seed, self.num_seeds = int(manifest["seed"]), int(manifest["method_options"]["num_seeds"])
    self.positional = manifest["tile_size"] > 0

  def seeds(self, tiles, ids, origins) -> np.ndarray:
    """float32 [n,K,h,w,3]: the seeds evaluation draws for these tiles."""
    if self.positional:
      return threefry.positional_seeds(self.seed, ids, self.num_seeds, tiles.shape[1:], origins)
    return threefry.image_seeds(self.seed, ids, self.num_seeds, tiles.shape[1:])

  def feed(self, tiles, category, ids, origins) -> dict:
    """The graph's inputs for these tiles."""
    return {"tiles": np.ascontiguousarray(tiles, np.uint8),
            "category": np.asarray(category, np.int32), "seeds": self.seeds(tiles, ids, origins)}

  def run(self, names, feed) -> list[np.ndarray]:
    """The graph's outputs `names` for the inputs `feed`."""
    return self.session.run(names, feed)

  def __call__(self, tiles, category, ids, origins) -> np.ndarray:
    return self.run(["tile_heatmaps"], self.feed(tiles, category, ids, origins))[0]

  def finished(self, images, category, ids) -> tuple[np.ndarray, np.ndarray]:
    """(smoothed heatmaps [n,H,W], image scores [n]) of whole images [n,H,W,3], from the graph."""
    origins = np.zeros((len(images), 2), np.int32)
    heat, scores = self.run(["heatmaps", "scores"], self.feed(images, category, ids, origins))
    return heat, scores


OPENVINO_PRECISIONS = ("f32", "bf16")


class OpenVinoTiles(OnnxTiles):
  """model.onnx on OpenVINO's CPU runtime (same inputs and outputs as `OnnxTiles`).

  precision "f32" compiles it with float32 inference in OpenVINO's accuracy mode (heatmaps equal
  onnxruntime's to about 1e-6); "bf16" lets OpenVINO compute convolutions and matrix products in
  bfloat16 on CPUs with bf16 instructions (AVX-512 BF16, AMX), about 1.6-1.8x float32's rate
  on the paper model's 128- and 256-channel convolutions (benchmarks/README.md), heatmaps within
  about 1% (tests/test_real_data.py bounds the change of the bottle AUROCs). `self.precision`
  is what OpenVINO chose: "f32" where the CPU has no bf16 instructions."""

  def __init__(self, path: str, manifest: dict, threads: int = 0, precision: str = "f32"):
    if precision not in OPENVINO_PRECISIONS:
      raise DeployError(f"OpenVINO precision must be one of {', '.join(OPENVINO_PRECISIONS)}, "
                        f"not {precision!r}.")
    try:
      import openvino
    except ImportError as e:
      raise DeployError(f"runtime openvino needs OpenVINO ({e}): pip install openvino.") from None
    model = _onnx_model(path)
    settings = {"INFERENCE_PRECISION_HINT": precision}
    if precision == "f32":
      settings["EXECUTION_MODE_HINT"] = "ACCURACY"
    if threads:
      settings["INFERENCE_NUM_THREADS"] = int(threads)
    self._core, self._settings, self._path = openvino.Core(), settings, model
    try:
      self._model = self._core.read_model(model)
    except Exception as e:  # pylint: disable=broad-except
      raise _load_error(model, " into OpenVINO", e) from None
    self._lock, self._requests = threading.Lock(), {}
    self._init_common(manifest, [o.get_any_name() for o in self._model.outputs])
    with self._lock:  # the full batch now, so a file OpenVINO refuses fails here, in one line
      compiled, _ = self._compiled_for(self.batch)
    chosen = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()  # <Type: 'bfloat16'>
    self.precision = "bf16" if ("bf16" in chosen or "bfloat16" in chosen) else "f32"
    self.runtime = f"OpenVINO {openvino.__version__.split('-')[0]}, {self.precision}"

  def bucket(self, n: int) -> int:
    """The batch a run of n images is padded to: a power of two, or the export's
    `images_per_call`. OpenVINO compiles the graph for each batch it runs, with every shape
    fixed (its fused elementwise kernels need them: 1.1-1.4x the speed of one compiled for
    any batch, benchmarks/README.md), so a few batches keep the compilations few."""
    return _bucket(n, 1, self.batch)

  @property
  def compiled_batches(self) -> list[int]:
    """The batches compiled so far (each with every input shape fixed)."""
    return sorted(self._requests)

  def _compiled_for(self, batch: int):
    """(compiled model, infer request) for runs of `batch` images; compiled on first use."""
    if batch not in self._requests:
      tiles, seeds = (self._model.input(name).get_partial_shape() for name in ("tiles", "seeds"))
      h, w, k = tiles[1].get_length(), tiles[2].get_length(), seeds[1].get_length()
      model = self._model.clone()
      try:
        model.reshape({"tiles": [batch, h, w, 3], "category": [batch],
                       "seeds": [batch, k, h, w, 3]})
        compiled = self._core.compile_model(model, "CPU", self._settings)
      except Exception as e:  # pylint: disable=broad-except
        raise _load_error(self._path, " into OpenVINO", e) from None
      self._requests[batch] = (compiled, compiled.create_infer_request())
    return self._requests[batch]

  def run(self, names, feed) -> list[np.ndarray]:
    n, size = len(feed["tiles"]), self.bucket(len(feed["tiles"]))
    feed = dict(zip(feed, _pad_rows(feed.values(), size)))
    with self._lock:  # one infer request per batch, reused (the service calls from its threads)
      compiled, request = self._compiled_for(size)
      result = request.infer(feed)
      return [np.array(result[compiled.output(name)])[:n] for name in names]


class Scorer:
  """An exported scorer; call it with uint8 images [B,H,W,3] or a list of [H_i,W_i,3] (and
  their category)."""

  def __init__(self, path: str, manifest: dict, tiles):
    self.path, self.manifest, self.tiles = path, manifest, tiles
    self.format = manifest.get("format", "stablehlo")
    self.image_size = manifest["image_size"]
    self.class_names = manifest["class_names"]
    self.tile_size, self.stride = manifest["tile_size"], manifest["stride"]
    self.tile_shape = tuple(manifest["tile_shape"])
    self.batch = tiles.batch  # tiles per call

  def describe(self) -> str:
    """`describe_export`'s line, with the runtime that runs an ONNX export."""
    line = describe_export(self.path, self.manifest)
    return line + (f" (on {self.tiles.runtime})" if self.format == "onnx" else "")

  def warm_up(self) -> None:
    """Compiles (StableHLO, OpenVINO) every batch shape a call can use, or runs once
    (onnxruntime), on blank images of the export's size, so that no request waits for a
    compilation."""
    sizes = sorted({self.tiles.bucket(n) for n in range(1, self.batch + 1)}) if hasattr(
        self.tiles, "bucket") else [1]
    h, w = self.tile_shape
    for n in sizes:
      self.tiles(np.zeros((n, h, w, 3), np.uint8), np.zeros(n, np.int32), np.zeros(n, np.int32),
                 np.zeros((n, 2), np.int32))

  def resolve_category(self, category: str | None) -> str:
    """The category images are scored as: `category`, or the model's only one, or (pooled
    model) its first one, whose threshold then decides; DeployError otherwise."""
    if category is None:
      if self.manifest["class_conditional"] and len(self.class_names) > 1:
        raise DeployError(f"The model is class-conditional: give category=, one of {self.class_names}.")
      return self.class_names[0]
    if category not in self.class_names:
      raise DeployError(f"Unknown category {category!r}: the export knows {self.class_names}.")
    return category

  def check_images(self, images) -> list[np.ndarray]:
    """The images as a list of uint8 [H,W,3]; DeployError for what this export cannot score."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
      images = list(images)
    images = [np.asarray(im) for im in images]
    s = self.image_size
    for im in images:
      if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
        raise DeployError(f"This export scores uint8 images [H,W,3]; got {im.dtype} "
                          f"{list(im.shape)}.")
      if self.tile_size == 0 and tiling.scored_shape(*im.shape[:2], self.stride, 0) != self.tile_shape:
        raise DeployError(
            f"This export scores {s}x{s} images whole; got {im.shape[1]}x{im.shape[0]}. Resize "
            f"them to {s}x{s} (`read_image` does), or export with --config.evaluate.tile_size "
            "(a multiple of the model's stride) to score images of any size in tiles.")
    return images

  def __call__(self, images, category: str | None = None) -> Scored:
    images = self.check_images(images)
    category = self.resolve_category(category)
    index = self.class_names.index(category)
    ids = image_ids(images)
    if getattr(self.tiles, "finishes", False):  # whole images: the ONNX graph smooths, scores
      heatmaps, scores = self._finished_in_graph(images, index, ids)
    else:
      heatmaps, scores = self._finished_on_host(images, index, ids)
    heatmaps = ragged.stack(heatmaps)
    t = self.manifest["thresholds"].get(category, {})
    threshold = t.get("image")
    if threshold is None:
      return Scored(heatmaps, scores, None, None, "")
    decisions = scores > threshold if t["strict"] else scores >= threshold
    scale = t.get("image_scale")
    normalised = None if scale is None else normalize.ScoreScale.from_json(scale)(scores)
    return Scored(heatmaps, scores, decisions, float(threshold), t["kind"], normalised)

  def _finished_on_host(self, images, index: int, ids) -> tuple[list, np.ndarray]:
    """Heatmaps (a list of [H_i,W_i]) and scores [n]: the export's tiles blended, smoothed and
    scored on the host (`fmjax.score.tiling`, `fmjax.score.maps`), as in evaluation."""
    tiler = tiling.Tiler([im.shape for im in images], self.stride, self.tile_size,
                         self.manifest["tile_overlap"])
    heatmaps, scores = [None] * len(images), np.zeros(len(images), np.float32)
    for tiles in tiler.groups(self.batch):
      where, origins = tiling.positions(tiles)
      heat = self.tiles(tiler.cut(images, tiles), np.full(len(tiles), index, np.int32),
                        ids[where], origins)
      for i, raw in tiler.add(tiles, heat):
        heatmaps[i], scores[i] = maps.finish(raw, self.manifest)
    return heatmaps, scores

  def _finished_in_graph(self, images, index: int, ids) -> tuple[list, np.ndarray]:
    """Heatmaps and scores of whole images of the export's size from the ONNX graph's own
    outputs (smoothed and scored in the graph)."""
    heatmaps, scores = [], []
    for start in range(0, len(images), self.batch):
      chunk = np.stack(images[start:start + self.batch])
      heat, score = self.tiles.finished(chunk, np.full(len(chunk), index, np.int32),
                                        ids[start:start + len(chunk)])
      heatmaps += list(heat)
      scores.append(score)
    return heatmaps, np.concatenate(scores).astype(np.float32)

  def defects(self, heatmap: np.ndarray, category: str, height: int, width: int):
    """(the predicted-defect mask bool [height,width], its regions) of one heatmap enlarged to
    its file's size (`maps.resize_map`), at the category's pixel threshold; (None, None)
    without one (`fmjax.decide.regions`)."""
    entry = self.manifest["thresholds"].get(category, {})
    if entry.get("pixel") is None:
      return None, None
    scale = entry.get("pixel_scale")
    return regions.at_file_size(heatmap, height, width, entry["pixel"],
                                scale and normalize.ScoreScale.from_json(scale))

def read_manifest(path: str) -> dict:
  """manifest.json, with each entry the scorer reads checked (a hand-edited or truncated file
  is one CorruptFileError naming the entry)."""
  from fmjax.core.records import Fields, read_json_file  # pylint: disable=g-import-not-at-top
  fix = "export again (python -m fmjax.main ... --mode=export)"
  f = Fields(read_json_file(path, fix), path, fix)
  for key in ("image_size", "stride", "tile_size", "num_param_arrays", "null_label", "seed",
              "checkpoint_step"):
    if f.integer(key) < 0:
      f.fail(key, f"= {f.value(key)}, not >= 0")
  for key in ("class_names", "platforms"):
    if not f.strings(key):
      f.fail(key, "is empty")
  f.numbers("tile_shape")
  f.boolean("class_conditional")
  f.number("smoothing_sigma")
  f.fields("method_options").integer("num_seeds")
  for name, entry in f.each("thresholds").items():
    if name not in f.value("class_names"):
      f.fail("thresholds", f"names {name!r}, not one of class_names")
    entry.number("image", nullable=True)
    entry.boolean("strict")
  if f.has("format") and f.string("format") not in ("stablehlo", "onnx"):
    f.fail("format", f"= {f.value('format')!r}, not stablehlo or onnx")
  return f.obj


def describe_export(path: str, manifest: dict) -> str:
  """One line: the checkpoint an export runs (fingerprint and step) and when it was made."""
  from fmjax.core import fingerprint  # pylint: disable=g-import-not-at-top
  return (f"{path}: checkpoint {fingerprint.short(manifest.get('checkpoint'))} at step "
          f"{manifest['checkpoint_step']}, exported {manifest.get('created', '(unknown)')}")


def stale_export(path: str, manifest: dict) -> str:
  """"" unless `path` is <workdir>/export and that workdir's newest checkpoint is another one
  than the export's; then the warning. Reads the checkpoints' JSON metadata only (no JAX)."""
  from fmjax.core import fingerprint  # pylint: disable=g-import-not-at-top
  checkpoints = os.path.join(os.path.dirname(os.path.abspath(path)), "checkpoints")
  try:
    steps = sorted(int(n) for n in os.listdir(checkpoints) if n.isdigit())
  except OSError:
    return ""
  for step in reversed(steps):
    meta_path = os.path.join(checkpoints, str(step), "meta", "metadata")
    try:
      with open(meta_path) as f:
        newest = json.load(f).get("fingerprint")
    except (OSError, ValueError, AttributeError):
      continue  # being written, or damaged: the next older one
    same = (newest == manifest.get("checkpoint") if newest and manifest.get("checkpoint")
            else step == manifest["checkpoint_step"])
    if same:
      return ""
    return (f"{path} is older than its workdir's newest checkpoint: it runs checkpoint "
            f"{fingerprint.short(manifest.get('checkpoint'))} (step "
            f"{manifest['checkpoint_step']}), the workdir now holds {fingerprint.short(newest)} "
            f"(step {step}); export again with --mode=export to deploy the newest model.")
  return ""


RUNTIMES = ("onnxruntime", "openvino")


def load(path: str, image_size: int | None = None, devices=None, threads: int = 0,
         runtime: str = "onnxruntime", precision: str = "f32") -> Scorer:
  """The exported scorer in `path`: a StableHLO export on `devices` (default: this process's
  devices of JAX's default backend), an ONNX export on the CPU with `threads` (0: the
  runtime's default) by `runtime`: onnxruntime, or OpenVINO in `precision` f32 or bf16
  (`OpenVinoTiles`). DeployError when it was exported for another platform or, with
  `image_size`, another image size, or when a runtime is asked of a StableHLO export."""
  if runtime not in RUNTIMES:
    raise DeployError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}.")
  manifest_path = os.path.join(path, "manifest.json")
  if not os.path.isfile(manifest_path):
    raise DeployError(f"{path} is not an fmjax export (no manifest.json): make one with "
                      "python -m fmjax.main --config <config> --workdir <dir> --mode=export.")
  manifest = read_manifest(manifest_path)
  if image_size is not None and manifest.get("tile_size", 0) == 0 and image_size != manifest["image_size"]:
    raise DeployError(f"{path} was exported for {manifest['image_size']}x{manifest['image_size']} "
                      f"images, not {image_size}x{image_size}: export the model again at "
                      f"--config.data.image_size={image_size} (a model is trained at one size).")
  if manifest.get("format", "stablehlo") == "onnx":
    if runtime == "openvino":
      return Scorer(path, manifest, OpenVinoTiles(path, manifest, threads, precision))
    return Scorer(path, manifest, OnnxTiles(path, manifest, threads))
  if runtime != "onnxruntime" or precision != "f32":
    raise DeployError(f"{path} is a StableHLO export, which runs on JAX: runtime and precision "
                      "choose how an ONNX export (--config.export.format=onnx) runs.")
  import jax
  devices = list(devices) if devices is not None else jax.local_devices()
  platform = devices[0].platform
  platform = {"gpu": "cuda"}.get(platform, platform)
  if platform not in manifest["platforms"]:
    raise DeployError(f"{path} was exported for {', '.join(manifest['platforms'])}, but this "
                      f"machine runs JAX on {platform}: export again with "
                      f"--config.export.platforms={','.join(manifest['platforms'] + [platform])}.")
  return Scorer(path, manifest, StableHLOTiles(path, manifest, devices))


def main(argv=None) -> int:
  console.route_warnings()
  parser = _Parser(prog="python -m fmjax.deploy", description=__doc__.split("\n")[0])
  parser.add_argument("export_dir")
  parser.add_argument("images", help="an image file or a folder of images")
  parser.add_argument("--category", default=None, help="the images' category (class-conditional models)")
  parser.add_argument("--out", default=None, help="where to write heatmaps (default <export_dir>/scored)")
  parser.add_argument("--batch", type=_positive_int, default=32, help="images per call")
  parser.add_argument("--skip-corrupt", action="store_true",
                      help="skip images that cannot be decoded (counted), instead of stopping")
  parser.add_argument("--resize", default=None,
                      help="how files are sized (data.resize: square, scale:<f>, long_side:<n>, "
                           "native; default: as the export's training read them)")
  parser.add_argument("--runtime", default="onnxruntime", choices=RUNTIMES,
                      help="what runs an ONNX export (default onnxruntime; openvino: pip install openvino)")
  parser.add_argument("--precision", default="f32", choices=OPENVINO_PRECISIONS,
                      help="OpenVINO's compute precision (bf16: faster where the CPU has bf16 "
                           "instructions, heatmaps within about 1%%)")
  args = parser.parse_args(argv)
  from fmjax.data.decode import IMAGE_EXTENSIONS, read_image_and_size  # PIL and numpy
  from fmjax.core.errors import UserError  # pylint: disable=g-import-not-at-top
  try:
    scorer = load(args.export_dir, runtime=args.runtime, precision=args.precision)
    console.say("# " + scorer.describe())
    stale = stale_export(args.export_dir, scorer.manifest)
    if stale:
      console.warn(stale)
    if os.path.isdir(args.images):
      paths = sorted(os.path.join(args.images, f) for f in os.listdir(args.images)
                     if f.lower().endswith(IMAGE_EXTENSIONS) and
                     os.path.isfile(os.path.join(args.images, f)))
    elif os.path.isfile(args.images):
      paths = [args.images]
    else:
      raise DeployError(f"{args.images} is neither an image file nor a folder.")
    if not paths:
      raise DeployError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) in {args.images}.")
    out = args.out or os.path.join(args.export_dir, "scored")
    os.makedirs(out, exist_ok=True)
    from matplotlib.colors import Normalize
    from PIL import Image

    from fmjax.core import files, plots  # matplotlib and numpy
    resize = args.resize or scorer.manifest.get("resize", "square")  # as training read them
    category = scorer.resolve_category(args.category)
    pixel = scorer.manifest["thresholds"].get(category, {}).get("pixel")
    table = [["path", "category", "width", "height", "score", "decision", "normalised_score",
              "mask", "num_regions"]]
    found, skipped, result = [], [], None
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    shared = {st for st in stems if stems.count(st) > 1}  # a.png and a.jpg: names with extension
    names = {p: (os.path.basename(p).replace(".", "_") if st in shared else st)
             for p, st in zip(paths, stems)}
    for start in range(0, len(paths), args.batch):
      chunk, read = [], []
      for p in paths[start:start + args.batch]:
        try:
          read.append(read_image_and_size(p, scorer.image_size, resize))
          chunk.append(p)
        except UserError as e:  # an image that cannot be decoded
          if not args.skip_corrupt:
            raise DeployError(f"{e} (--skip-corrupt skips such files)") from None
          console.warn(f"skipped {p}: {e}")
          skipped.append(p)
      if not chunk:
        continue
      images = [image for image, _ in read]
      result = scorer(images, category)
      # Full colour at the calibrated pixel threshold (a predicted defect), else the batch's scale.
      scale = Normalize(0.0, pixel, clip=True) if pixel else plots.heat_scale(result.heatmaps)
      for i, p in enumerate(chunk):
        word = ("" if result.decisions is None else
                "anomalous" if result.decisions[i] else "normal")
        normalised = "" if result.normalised is None else f"{result.normalised[i]:.6g}"
        h, w = images[i].shape[:2]
        console.say(f"{p}\t{result.scores[i]:.6g} {word} {normalised}".rstrip() + f"\t{w}x{h}")
        stem = names[p]
        panel = Image.fromarray(plots.overlay(images[i], result.heatmaps[i], scale))
        zoom = max(1, 256 // max(h, w))  # small images enlarged, with their aspect ratio
        panel.resize((w * zoom, h * zoom), Image.NEAREST).save(
            os.path.join(out, stem + "_heatmap.png"))
        file_w, file_h = read[i][1]
        mask_file, count = "", ""
        mask, described = scorer.defects(result.heatmaps[i], category, file_h, file_w)
        if mask is not None:  # the predicted defect at the file's size, and its regions
          mask_file = stem + "_mask.png"
          Image.fromarray(mask.astype(np.uint8) * 255).save(os.path.join(out, mask_file))
          found.append({"path": p, "width": file_w, "height": file_h, "mask": mask_file,
                        "regions": described})
          count = len(described)
        table.append([p, category, file_w, file_h, f"{result.scores[i]:.8g}", word, normalised,
                      mask_file, count])
    files.write_text(os.path.join(out, "scores.csv"), files.csv_text(table))
    if found:
      files.write_json(os.path.join(out, "regions.json"),
                       {"pixel_threshold": pixel, "images": found})
    if skipped:
      console.warn(f"skipped {len(skipped)} of {len(paths)} images that cannot be decoded.")
    if result is None:
      raise DeployError(f"None of the {len(paths)} images in {args.images} could be decoded.")
    if result.threshold is not None:
      console.say(f"# threshold {result.threshold:.6g} ({result.threshold_kind}); scores.csv, "
                  f"heatmaps{', masks and regions.json' if found else ''} in {out}/")
    return 0
  except (DeployError, OSError, ValueError) as e:
    console.error(str(e), prog="fmjax.deploy")
    return 1
  except KeyboardInterrupt:
    console.error("interrupted; the images listed above were scored.", prog="fmjax.deploy")
    return 130


class _Parser(argparse.ArgumentParser):
  """argparse with one-line errors (`fmjax.deploy: error: ...`, exit 2)."""

  def error(self, message):
    console.error(f"{message} (see --help)", prog="fmjax.deploy")
    sys.exit(2)


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
  return value


if __name__ == "__main__":
  sys.exit(main())
