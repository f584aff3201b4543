"""The methods' section of the config: each method's options with their defaults, and the
checks of evaluate.method, train.objective, K, T and every method's options.

The defaults are stated here, without JAX, so that `fmjax.configlib.base_config` (and so every
configs/*.py) builds the config without importing a method module: evaluate.<scorer>.* from
SCORER_OPTIONS, train.<objective>.* from OBJECTIVE_OPTIONS. Each method module passes its
entry as its `options`; a method without options has no entry. The checks ask the registry
(`fmjax.methods`), which imports the method modules, and JAX, when first used.
"""

from __future__ import annotations

from ml_collections import config_dict

from fmjax import methods
from fmjax.core.settings import rule_errors

# Scorers' options (evaluate.<name>.*), in registry order.
SCORER_OPTIONS = {
    "flow_mismatch": {"aggregator": "min",  # min | mean | quantile (over the K seeds)
                      "quantile": config_dict.placeholder(float)},  # q in (0, 1] for quantile
    "reconflow": {"t_init": 0.5},  # the time the test image is noised to
    "dflow": {"iterations": 20,  # Adam steps on the initial noise
              "learning_rate": 0.1},
    "radar": {"t": 0.5,  # the time the test image is noised to
              "edge_filter": False,  # Sobel gradient magnitude of the map
              "image_score": "top1"},  # top1 (max + top-1% mean) | isolation_forest
}

# Training objectives' options (train.<name>.*).
OBJECTIVE_OPTIONS = {
    "reflect": {"max_regions": 3,  # random-walk regions per corrupted image
                "max_steps": 0},  # longest walk in steps; 0: image_size^2 / 16
}


def config_errors(config) -> list[str]:
  """What is wrong with K, T, every method's options (used now or not), train.objective,
  evaluate.method and the pair of them."""
  ec, tc = config.evaluate, config.train
  errors = rule_errors([
      ("evaluate.num_seeds (K)", ec.num_seeds, ec.num_seeds >= 1, ">= 1"),
      ("evaluate.num_times (T)", ec.num_times, ec.num_times >= 1, ">= 1")])
  for o in methods.OBJECTIVES.values():
    errors += o.check(tc[o.name].to_dict() if o.options else {})
  for name in methods.SCORERS:
    errors += methods.scorer(name).check(methods.scorer_options(ec, name))
  if tc.objective not in methods.OBJECTIVES:
    errors.append(f"train.objective must be one of {tuple(methods.OBJECTIVES)}, got {tc.objective!r}")
  if ec.method not in methods.SCORERS:
    errors.append(f"evaluate.method must be one of {tuple(methods.SCORERS)}, got {ec.method!r}")
  else:
    scorer = methods.scorer(ec.method)
    if tc.objective in methods.OBJECTIVES and scorer.objective != tc.objective:
      errors.append(f"evaluate.method={ec.method} needs a model trained with train.objective="
                    f"{scorer.objective}, but train.objective={tc.objective}: use evaluate.method "
                    f"in {methods.scorers_for(tc.objective)}")
  return errors
