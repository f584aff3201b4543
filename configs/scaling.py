"""Compute-scaling study: one training run per global batch size (fmjax/studies/scaling.py).

  python -m fmjax.main --config configs/scaling.py --workdir runs/scaling_bottle \
      [--config.data.categories=bottle] [--config.scaling.batch_sizes=32,64,...,1024]
  python -m fmjax.main --config configs/scaling.py:quickstart --workdir runs/scaling_quickstart

Without an argument: the paper model and recipe (configs/mvtec.py) on MVTec AD with 10% of the
normal training images held out for the validation loss, batch sizes 32 to 4096, the learning
rate scaled by sqrt(B / 32), 2000 epochs per arm. `:quickstart` is a 3-arm study of the
quickstart model on the embedded data (a few minutes on a CPU). The config's `mode` is
"scaling", so no --mode is needed. Results: <workdir>/scaling/ (results.md, results.json,
plots); each arm is a complete workdir in <workdir>/arms/batch_<B>/.
"""

from fmjax import configlib


def get_config(variant: str = "paper"):
  if variant == "quickstart":
    return configlib.scaling_quickstart_config()
  if variant == "paper":
    config = configlib.base_config()
    config.data.name = "mvtec"
    config.data.root = "../shared/data/mvtec"
    config.data.val_fraction = 0.1
  else:
    raise ValueError(f"configs/scaling.py: unknown variant {variant!r} (use quickstart, or none)")
  config.mode = "scaling"
  return config
