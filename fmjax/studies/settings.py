"""The studies' sections of the config: study.* (--mode=study, fmjax/studies/ablations.py) and
scaling.* (--mode=scaling, fmjax/studies/scaling.py), their list settings parsed into what the
studies run, and their checks (whatever the mode, like every section)."""

from __future__ import annotations

from fmjax import methods
from fmjax.core.errors import ConfigError
from fmjax.core.settings import one_of, parse_errors, parse_list, positive_int, rule_errors
from fmjax.model.optim import LR_RULES

STUDIES = ("compute", "aggregators", "checkpoints", "seeds", "pooling", "methods")
PAPER_VALUES = (2, 4, 6, 8, 10, 12, 14, 16, 18, 20)
BUDGET_UNITS = ("examples", "epochs", "steps")


def compute_settings(spec: str) -> list[dict]:
  """"paper" (Table 6's 30 settings) or "KxT,KxT,..." -> [{group, num_seeds, num_times}]."""
  if str(spec).strip() == "paper":
    rows = [{"group": "fix K=5", "num_seeds": 5, "num_times": t} for t in PAPER_VALUES]
    rows += [{"group": "fix T=5", "num_seeds": k, "num_times": 5} for k in PAPER_VALUES]
    rows += [{"group": "K=T", "num_seeds": v, "num_times": v} for v in PAPER_VALUES]
    return rows
  pairs = parse_list(spec, "study.compute", _k_by_t,
                     rule="'paper' or comma-separated KxT settings (e.g. '5x10,10x10')")
  return [{"group": "K=T" if k == t else "grid", "num_seeds": k, "num_times": t} for k, t in pairs]


def _k_by_t(item: str) -> tuple[int, int]:
  try:
    k, t = (int(v) for v in item.lower().split("x"))
  except ValueError:
    k = t = 0
  if k < 1 or t < 1:
    raise ConfigError(f"study.compute: {item!r} is not KxT with K, T >= 1 (e.g. 5x10); use "
                      "'paper' or a list.")
  return k, t


def aggregator_settings(spec: str) -> list[dict]:
  """"min,mean,q0.1" -> [{aggregator, quantile}]."""
  return parse_list(spec, "study.aggregators", _aggregator,
                    rule="comma-separated aggregators (e.g. 'min,mean,q0.1')")


def _aggregator(item: str) -> dict:
  if item in ("min", "mean"):
    return {"aggregator": item, "quantile": None}
  try:
    q = float(item[1:]) if item.startswith("q") else None
  except ValueError:
    q = None
  if q is None or not 0 < q <= 1:
    raise ConfigError(f"study.aggregators: {item!r} is not min, mean or q<fraction> with a "
                      "fraction in (0, 1] (e.g. q0.1).")
  return {"aggregator": "quantile", "quantile": q}


def seed_settings(spec: str) -> list[dict]:
  """"0,1,2" -> [{seed}]."""
  seeds = parse_list(spec, "study.seeds", int, min_items=2, distinct=True,
                     rule="at least two distinct seeds (comma-separated integers)")
  return [{"seed": s} for s in seeds]


def method_settings(spec: str, objective: str | None = "cfm") -> list[dict]:
  """"flow_mismatch,reconflow" -> [{method}]; every method must score `objective`'s models
  (None: any objective)."""
  names = parse_list(spec, "study.methods", one_of(methods.SCORERS),
                     rule=f"comma-separated scorers among {tuple(methods.SCORERS)}")
  wrong = [m for m in names if objective is not None and methods.scorer(m).objective != objective]
  if wrong:
    raise ConfigError(f"study.methods: {wrong} do not score a model trained with "
                      f"train.objective={objective}; these do: {methods.scorers_for(objective)}.")
  return [{"method": m} for m in names]


def listed_steps(spec: str) -> list[int]:
  """study.steps: "200,400" -> [200, 400]; "" -> [] (every saved checkpoint)."""
  return parse_list(spec, "study.steps", positive_int, min_items=0,
                    rule="comma-separated checkpoint steps >= 1 (empty: every saved one)")


def scaling_batch_sizes(spec: str) -> list[int]:
  """"32,64,128" -> [32, 64, 128] (ascending, distinct, >= 1; ConfigError otherwise)."""
  return sorted(parse_list(spec, "scaling.batch_sizes", positive_int, distinct=True,
                           rule="comma-separated distinct integers >= 1"))


def config_errors(config) -> list[str]:
  """What is wrong with study.* and scaling.*; study.methods must score train.objective's
  models when study.name is methods."""
  st = config.study
  errors = [] if st.name in STUDIES else [f"study.name must be one of {STUDIES}, got {st.name!r}"]
  objective = config.train.objective if st.name == "methods" else None
  errors += parse_errors(lambda: compute_settings(st.compute),
                         lambda: aggregator_settings(st.aggregators),
                         lambda: seed_settings(st.seeds),
                         lambda: method_settings(st.methods, objective),
                         lambda: listed_steps(st.steps))
  return errors + scaling_errors(config.scaling)


def scaling_errors(sc) -> list[str]:
  """What is wrong with the config's `scaling` subtree."""
  errors = []
  try:
    sizes = scaling_batch_sizes(sc.batch_sizes)
  except ConfigError as e:
    errors.append(str(e))
    sizes = []
  if sc.noise_scale_groups < 2:
    errors.append(f"scaling.noise_scale_groups must be >= 2, got {sc.noise_scale_groups}")
  elif sc.noise_scale_every > 0:
    bad = [b for b in sizes if b % sc.noise_scale_groups]
    if bad:
      errors.append(f"scaling.batch_sizes {bad} are not divisible by scaling.noise_scale_groups="
                    f"{sc.noise_scale_groups}")
  return errors + rule_errors([
      ("scaling.base_batch_size", sc.base_batch_size, sc.base_batch_size >= 1, ">= 1"),
      ("scaling.lr_rule", sc.lr_rule, sc.lr_rule in LR_RULES, f"one of {LR_RULES}"),
      ("scaling.warmup_examples", sc.warmup_examples, sc.warmup_examples >= 0, ">= 0"),
      ("scaling.budget_unit", sc.budget_unit, sc.budget_unit in BUDGET_UNITS,
       "examples, epochs or steps"),
      ("scaling.budget", sc.budget, sc.budget > 0, "> 0"),
      ("scaling.val_every_examples", sc.val_every_examples, sc.val_every_examples >= 0, ">= 0"),
      ("scaling.val_times", sc.val_times, sc.val_times >= 1, ">= 1"),
      ("scaling.noise_scale_every", sc.noise_scale_every, sc.noise_scale_every >= 0,
       ">= 0 (0: off)"),
      ("scaling.target_val_loss", sc.target_val_loss, sc.target_val_loss >= 0, ">= 0 (0: auto)")])
