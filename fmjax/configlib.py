"""The base ConfigDict every config in configs/ starts from, the recipes built on it, and its
validation.

Importing this module needs ml_collections only, not JAX: the defaults and recipes are plain
values, each method's options come from `fmjax.methods.settings` (a JAX-free table), and the
checks are imported when `validate` first runs. Each package checks its own section of the
config in its `settings.py` (`config_errors(config) -> list[str]`); `validate` runs them all
and raises one ConfigError listing every problem. Like the entry points, this module sits
above the packages: it may import any of them, and none of them imports it.
"""

from __future__ import annotations

import copy
import importlib

import ml_collections

from fmjax.core.errors import ConfigError
from fmjax.methods.settings import OBJECTIVE_OPTIONS, SCORER_OPTIONS

# Keys that moved into a method's own subtree: old flat key -> new key.
RENAMED_KEYS = {
    "evaluate.aggregator": "evaluate.flow_mismatch.aggregator",
    "evaluate.quantile": "evaluate.flow_mismatch.quantile",
    "evaluate.reconflow_t_init": "evaluate.reconflow.t_init",
    "evaluate.dflow_iterations": "evaluate.dflow.iterations",
    "evaluate.dflow_learning_rate": "evaluate.dflow.learning_rate",
    "train.reflect_max_regions": "train.reflect.max_regions",
    "train.reflect_max_steps": "train.reflect.max_steps",
}

# The modules whose config_errors check a section each (fmjax/<package>/settings.py), in layer
# order: core (mode, mesh, profile windows), data.*, model.*, methods (evaluate.method,
# train.objective, K, T, every method's options), train.*, the scoring batches, decide
# (calibrate.*, export.*, evaluate.cascade.*), studies (study.*, scaling.*).
SECTION_CHECKS = ("fmjax.core.settings", "fmjax.data.settings", "fmjax.model.settings",
                  "fmjax.methods.settings", "fmjax.train.settings", "fmjax.score.settings",
                  "fmjax.decide.settings", "fmjax.studies.settings")


def base_config() -> ml_collections.ConfigDict:
  """The paper's recipe (Appendix C.1) on MVTec AD; configs override what differs."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # What `python -m fmjax.main` runs when --mode is not given ("": train_and_evaluate);
  # configs/scaling.py sets "scaling".
  c.mode = ""
  for name, section in (("data", _data_section), ("model", _model_section),
                        ("train", _train_section), ("evaluate", _evaluate_section),
                        ("calibrate", _calibrate_section), ("export", _export_section),
                        ("study", _study_section), ("scaling", _scaling_section),
                        ("mesh", _mesh_section)):
    c[name] = section()
  # Each method's options, defaults stated in fmjax/methods/settings.py.
  for name, options in SCORER_OPTIONS.items():
    c.evaluate[name] = ml_collections.ConfigDict(copy.deepcopy(options))
  for name, options in OBJECTIVE_OPTIONS.items():
    c.train[name] = ml_collections.ConfigDict(copy.deepcopy(options))
  return c


def _data_section() -> ml_collections.ConfigDict:
  """What is read and how (fmjax/data): the source, categories, image geometry, held-out
  normals, loaders."""
  s = ml_collections.ConfigDict()
  s.name = "mvtec"  # synthetic, or a set in fmjax.data.sets (mvtec, visa, folder, mpdd, ...)
  s.root = ""
  s.categories = ""  # comma-separated; empty: every category (all 15 for mvtec)
  s.image_size = 128
  # How each file is sized (fmjax/data/decode.py): square (to data.image_size x image_size, the
  # paper's), scale:<f>, long_side:<n> or native (the last three keep the aspect ratio).
  s.resize = "square"
  # Training on random square crops of this side (0: whole images, which must then share one
  # size); a multiple of the model's stride, at most the smallest training image's side.
  s.crop_size = 0
  s.class_conditional = True  # False: one pooled model fed the null label
  s.image_level_only = False  # True: no masks (image metrics only)
  s.skip_corrupt = False  # True: skip undecodable files with a warning instead of stopping
  s.visa_split_csv = "split_csv/1cls.csv"  # relative to data.root, or an absolute path
  # Real-IAD (data.root = its folder): the image folder and the meta files' folder (the split:
  # realiad_jsons, realiad_jsons_sv or realiad_jsons_fuiad_<r>), relative to data.root.
  s.realiad_images = "realiad_1024"
  s.realiad_jsons = "realiad_jsons"
  s.tfds_dir = ""  # every set but mvtec_loco: prepare TFDS array_record files here once, then read them
  s.score_dir = ""  # --mode=score: a folder of unlabeled images to score
  s.score_category = ""  # --mode=score: their category (a class of the trained model)
  # Normal training images held out of training per category (for calibration): the paper's
  # reproduction configs set 0 and train on every normal image, as the paper does.
  s.val_fraction = 0.1
  s.loader_workers = 0  # grain worker processes for training batches (0: threads only)
  s.loader_threads = 4  # grain threads reading training batches
  s.synthetic = ml_collections.ConfigDict(dict(
      categories=("weave", "brushed", "tiles"), num_train=200, num_test_normal=20,
      num_test_anomalous=30, seed=0))
  return s


def _model_section() -> ml_collections.ConfigDict:
  """The velocity U-Net (fmjax/model/unet.py): the paper's 45M-parameter configuration."""
  s = ml_collections.ConfigDict()
  s.channels = 64
  s.num_res_blocks = 3
  s.channel_mult = (1, 1, 2, 2, 4, 4)
  s.attention_rates = (4, 8, 16, 32)
  s.head_channels = 32
  s.dropout = 0.05
  s.norm_groups = 32
  s.dtype = "bfloat16"  # compute dtype; parameters stay float32
  s.attention_impl = "auto"  # auto (cuDNN on GPU with bf16) | xla | cudnn
  # How GroupNorm computes (the same function and parameters): sums (per-channel sums and a
  # hand-written backward, faster on XLA:CPU) | direct (the textbook reductions, JAX's backward)
  # | fused (sums, with each residual block's GroupNorm, conditioning and SiLU one function with
  # one hand-written backward: the CPU recipes' setting; the SiLU then runs before the cast to
  # model.dtype).
  s.group_norm = "sums"
  return s


def _train_section() -> ml_collections.ConfigDict:
  """The optimiser and schedule (Appendix C.1), logging, checkpoints, profiling (fmjax/train)."""
  s = ml_collections.ConfigDict()
  s.objective = "cfm"  # a name in fmjax.methods.OBJECTIVES; its options: train.<name>.*
  s.batch_size = 32
  s.num_epochs = 2000.0
  s.num_steps = -1  # > 0 overrides num_epochs
  # > 0: this run stops after about this many seconds of training (checked at log steps, the
  # step it stops at saved as a checkpoint); a later run resumes towards the full length.
  s.max_seconds = 0.0
  s.learning_rate = 1e-4
  s.weight_decay = 1e-4
  s.b1 = 0.9
  s.b2 = 0.99
  s.eps = 1e-6
  s.amsgrad = True
  s.update_rms_clip = 1.0
  s.grad_clip_norm = 0.0  # 0: off (the paper's default)
  s.warmup_steps = 0  # linear learning-rate warm-up over this many updates (0: off)
  s.ema_decay = 0.0  # 0: off
  s.log_every_steps = 50
  s.log_every_seconds = 10.0
  s.checkpoint_every_steps = 1000
  s.keep_checkpoints = 3
  s.profile_steps = ""  # "a,b": jax.profiler trace of steps a..b into <workdir>/profile/train
  return s


def _evaluate_section() -> ml_collections.ConfigDict:
  """The scorer with its K and T, batching, tiles for large images, smoothing, the report's
  pictures (fmjax/score, fmjax/report)."""
  s = ml_collections.ConfigDict()
  # A name in fmjax.methods.SCORERS whose model is train.objective's; its options are
  # evaluate.<name>.* (e.g. evaluate.flow_mismatch.aggregator, evaluate.reconflow.t_init).
  s.method = "flow_mismatch"
  s.num_seeds = 10  # K, for the methods that draw K seeds
  s.num_times = 10  # T: times (flow_mismatch) or Euler steps (reconflow, dflow, wtflow)
  s.batch_size = 8
  s.max_forward_batch = 400  # samples per forward pass, per device
  s.seed = 0
  s.use_ema = True
  s.num_heatmaps = 12  # full-size panels of the highest/lowest scores
  s.grid_columns = 8  # test images per category grid picture
  # Cascade scoring: every image at a cheap K, T; the full setting only for cheap scores in a
  # band around the calibrated threshold (fmjax/decide/cascade.py). Calibrate with it enabled first.
  # Where the calibrated threshold sits, in (0, 1): 0.5 keeps it; higher flags more images
  # (fmjax/decide/normalize.py: normalised scores are 0.5 at the shifted threshold).
  s.sensitivity = 0.5
  s.cascade = ml_collections.ConfigDict(dict(enabled=False, num_seeds=2, num_times=2,
                                            margin=0.1))
  # Images of any size (fmjax/score/tiling.py): 0 scores each image whole; else square tiles of
  # this side (a multiple of the model's stride) overlapping by tile_overlap (-1: a quarter of
  # the tile), blended into one map. Images above max_image_pixels are refused.
  s.tile_size = 0
  s.tile_overlap = -1
  s.max_image_pixels = 50_000_000
  # Gaussian smoothing of the heatmap before the image score (fmjax/score/maps.py): sigma in
  # pixels, or as a fraction of the map's shorter side; 0: off (the paper's setting).
  s.smoothing_sigma = 0.0
  s.smoothing_sigma_fraction = 0.0
  # Where the pixel metrics are measured: "scored" (on the maps as scored, at data.resize's
  # size) or "native" (each map resized back to its file's size and compared with the mask
  # read at that size: the same yardstick for squashed and native-resolution runs).
  s.pixel_metrics_at = "scored"
  # AUPIMO's range of the normal images' shared false-positive rate, "lower,upper" (Bertoldo
  # et al. 2024: 1e-5 to 1e-4; the lower bound needs about 1/lower normal test pixels).
  s.aupimo_fpr = "1e-5,1e-4"
  s.profile_batches = ""  # "a,b": trace of scoring batches a..b into <workdir>/profile/score
  return s


def _calibrate_section() -> ml_collections.ConfigDict:
  """--mode=calibrate (and after train_and_evaluate): thresholds from held-out normals."""
  s = ml_collections.ConfigDict()
  # Target false-alarm rates on the held-out normals, comma-separated; the first decides
  # --mode=score and the report's calibrated column.
  s.false_alarm_rates = "0.01"
  return s


def _export_section() -> ml_collections.ConfigDict:
  """--mode=export (fmjax/decide/export.py)."""
  s = ml_collections.ConfigDict()
  s.format = "stablehlo"  # stablehlo (scorer.jax, needs jax) | onnx (model.onnx, onnxruntime)
  s.platforms = "cpu,cuda,tpu"  # the platforms the StableHLO is lowered for
  return s


def _study_section() -> ml_collections.ConfigDict:
  """--mode=study (fmjax/studies/ablations/): the paper's ablations."""
  s = ml_collections.ConfigDict()
  s.name = "compute"  # compute | aggregators | checkpoints | seeds | pooling | methods
  s.compute = "paper"  # Table 6's 30 (K, T) settings, or "KxT,KxT,..."
  s.aggregators = "min,mean,q0.1,q0.2,q0.3"  # Table 7
  s.steps = ""  # checkpoints study: comma-separated steps; empty: every saved checkpoint
  s.seeds = "0,1,2"  # seeds study: scoring seeds (evaluate.seed values)
  s.methods = "flow_mismatch,reconflow,dflow"  # methods study: scorers on the same model
  return s


def _scaling_section() -> ml_collections.ConfigDict:
  """--mode=scaling (fmjax/studies/scaling.py): one training run ("arm") per global batch size,
  each scored at the end; the defaults are the paper model's study (configs/scaling.py)."""
  s = ml_collections.ConfigDict()
  s.batch_sizes = "32,64,128,256,512,1024,2048,4096"
  s.base_batch_size = 32  # train.learning_rate is the rate at this batch size
  s.lr_rule = "sqrt"  # none | linear | sqrt: the learning rate at batch B
  s.warmup_examples = 20480  # linear warm-up over this many examples (0: none)
  s.budget_unit = "epochs"  # examples | epochs | steps: what every arm gets the same of
  s.budget = 2000.0
  s.val_every_examples = 0  # held-out loss every this many examples (0: budget / 40)
  s.val_times = 10  # the held-out loss's fixed time grid: t = (j + 0.5) / val_times
  s.val_seed = 0  # its fixed noise
  s.noise_scale_every = 10  # gradient noise scale measured every this many steps (0: off)
  s.noise_scale_groups = 8  # the batch is split into this many groups (B_small = B / groups)
  s.target_val_loss = 0.0  # steps/examples to this held-out loss (0: the loss every arm reaches)
  return s


def _mesh_section() -> ml_collections.ConfigDict:
  """The devices used (-1: all)."""
  s = ml_collections.ConfigDict()
  s.num_devices = -1  # -1: all devices
  return s


def small_cpu_unet(config, num_steps: int) -> ml_collections.ConfigDict:
  """The 32x32 CPU recipe (quickstart, cpu_bottle): a 345k-parameter U-Net, float32, batch 32,
  learning rate 1e-3, `num_steps` steps; evaluated in batches of 32."""
  config.data.image_size = 32
  config.model.update(channels=16, num_res_blocks=1, channel_mult=(1, 2, 2), attention_rates=(4,),
                      head_channels=16, norm_groups=8, dropout=0.0, dtype="float32",
                      group_norm="fused")
  config.train.update(batch_size=32, num_steps=num_steps, learning_rate=1e-3)
  config.evaluate.batch_size = 32
  return config


def quickstart_config() -> ml_collections.ConfigDict:
  """configs/quickstart.py: the 32x32 CPU recipe on the embedded procedural data, 500 steps,
  K = T = 4 (also what the notebooks start from)."""
  config = base_config()
  config.data.name = "synthetic"
  small_cpu_unet(config, num_steps=500)
  config.train.log_every_steps = 25
  config.train.checkpoint_every_steps = 200
  config.evaluate.num_seeds = 4
  config.evaluate.num_times = 4
  config.evaluate.max_forward_batch = 512
  return config


def scaling_quickstart_config() -> ml_collections.ConfigDict:
  """configs/scaling.py:quickstart: a 3-arm compute-scaling study (batch 16, 64, 256; 2048
  examples each) of the quickstart model on the embedded data, a few minutes on a CPU (also
  what the scaling notebook starts from)."""
  config = quickstart_config()
  config.mode = "scaling"
  config.data.synthetic.num_train = 100  # per category; data.val_fraction (10%) held out
  config.scaling.update(batch_sizes="16,64,256", base_batch_size=32, lr_rule="sqrt",
                        warmup_examples=256, budget_unit="examples", budget=2048,
                        val_every_examples=128, val_times=4, noise_scale_every=4,
                        noise_scale_groups=4)
  config.evaluate.num_heatmaps = 4
  return config


def renamed_key_errors(keys) -> list[str]:
  """Messages for old flat keys (dotted) among `keys`, naming the key that replaced each."""
  return [f"{k} is now {RENAMED_KEYS[k]}" for k in keys if k in RENAMED_KEYS]


def has_key(config, dotted: str) -> bool:
  """Whether `config` has the dotted key `dotted` (every parent a ConfigDict that has the next part)."""
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node:
      return False
    node = node[part]
  return True


def config_errors(config) -> list[str]:
  """Every problem with `config`: old keys that moved, then each section's (SECTION_CHECKS)."""
  errors = renamed_key_errors(k for k in RENAMED_KEYS if has_key(config, k))
  for module in SECTION_CHECKS:
    errors += importlib.import_module(module).config_errors(config)
  return errors


def validate(config) -> None:
  """Raises one ConfigError listing what to change for every value the code cannot run with."""
  errors = config_errors(config)
  if errors:
    raise ConfigError("Invalid config:\n  " + "\n  ".join(errors))


def validate_devices(config, mode: str = "") -> None:
  """Batch sizes against the devices and hosts, before any work (ConfigError on a mismatch);
  with mode "scaling", every scaling.batch_sizes value too."""
  import jax  # pylint: disable=g-import-not-at-top  (importing this module needs no JAX)
  from fmjax.studies.settings import scaling_batch_sizes  # pylint: disable=g-import-not-at-top
  available = jax.device_count()
  n = available if config.mesh.num_devices in (-1, None) else config.mesh.num_devices
  errors = []
  batches = [("train.batch_size", config.train.batch_size),
             ("evaluate.batch_size", config.evaluate.batch_size)]
  if mode == "scaling":
    batches = batches[1:] + [("scaling.batch_sizes value", b)
                             for b in scaling_batch_sizes(config.scaling.batch_sizes)]
  if not 1 <= n <= available:
    errors.append(f"mesh.num_devices={n}, but {available} devices are available")
  else:
    for name, batch in batches:
      if batch % n or batch % jax.process_count():
        errors.append(f"{name}={batch} must be divisible by the {n} devices (and the "
                      f"{jax.process_count()} hosts); e.g. {n * max(1, round(batch / n))}")
  if errors:
    raise ConfigError("Invalid config:\n  " + "\n  ".join(errors))
