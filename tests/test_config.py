"""Configs load without JAX, the one list parser, each section's checks (study.* among them),
and the methods' option table against the registry."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from fmjax import configlib
from fmjax.core.errors import ConfigError
from fmjax.core.settings import parse_list, positive_int, trace_window

from conftest import REPO, tiny_config
from test_main import _cli

CONFIGS = sorted((REPO / "configs").glob("*.py"))


def _variants(path) -> list:
  """[None] (get_config()) and every variant the file documents as configs/<file>.py:<variant>."""
  named = re.findall(rf"configs/{path.name}:(\w+)", path.read_text())
  return [None] + sorted(set(named))


def _load(path, variant=None):
  spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config() if variant is None else module.get_config(variant)


def test_config_files_document_their_variants():
  variants = {p.name: _variants(p) for p in CONFIGS}
  assert {"quickstart.py", "mvtec.py", "visa.py", "folder.py", "cpu_bottle.py", "scaling.py",
          "studies.py", "mpdd.py", "btad.py", "ksdd2.py", "kolektorsdd.py"} <= set(variants)
  assert variants["studies.py"] == [None, "aggregators", "checkpoints", "compute", "methods",
                                    "pooling", "seeds"]
  assert variants["scaling.py"] == [None, "quickstart"]
  assert variants["quickstart.py"] == [None]


# Run in a fresh interpreter: every config file, every variant, then the registry on first use.
_LOAD_ALL = """
import importlib.util, json, sys
heavy = ("jax", "flax", "grain", "optax", "orbax")
out = {"configs": {}}
for path, variant in json.loads(sys.argv[1]):
  spec = importlib.util.spec_from_file_location("cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config() if variant is None else module.get_config(variant)
  out["configs"][f"{path}:{variant}"] = [config.data.name, config.mode, config.study.name,
                                         config.evaluate.radar.t]
out["loaded"] = sorted({m.split(".")[0] for m in sys.modules} & set(heavy))
from fmjax import methods
out["scorers"] = list(methods.SCORERS)  # the registry imports the method modules, and JAX
out["loaded_after_registry"] = sorted({m.split(".")[0] for m in sys.modules} & set(heavy))
print(json.dumps(out))
"""


def test_configs_load_without_jax():
  cases = [(str(p), v) for p in CONFIGS for v in _variants(p)]
  run = subprocess.run([sys.executable, "-c", _LOAD_ALL, json.dumps(cases)], cwd=REPO,
                       env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                       text=True, timeout=300)
  assert run.returncode == 0, run.stderr
  out = json.loads(run.stdout.strip().splitlines()[-1])
  assert out["loaded"] == []  # no jax, flax, grain, optax or orbax after every get_config()
  assert len(out["configs"]) == len(cases) >= 14
  studies = str(REPO / "configs" / "studies.py")
  for name in ("compute", "aggregators", "checkpoints", "seeds", "pooling", "methods"):
    assert out["configs"][f"{studies}:{name}"] == ["mvtec", "", name, 0.5]
  assert out["configs"][f"{REPO / 'configs' / 'scaling.py'}:quickstart"][:2] == ["synthetic",
                                                                                 "scaling"]
  assert out["configs"][f"{REPO / 'configs' / 'quickstart.py'}:None"][:2] == ["synthetic", ""]
  assert out["scorers"][:2] == ["flow_mismatch", "reconflow"]
  assert "jax" in out["loaded_after_registry"]  # so the check above can see JAX


@pytest.mark.parametrize("path,variant", [(p, v) for p in CONFIGS for v in _variants(p)],
                         ids=lambda x: getattr(x, "name", str(x)))
def test_every_config_variant_validates(path, variant):
  configlib.validate(_load(path, variant))


# ---- the list parser ----

def test_parse_list_items_blanks_and_sequences():
  assert parse_list(" a, b,,c ,", "k", rule="r") == ["a", "b", "c"]
  assert parse_list("3, 1,2", "k", int, rule="r") == [3, 1, 2]
  assert parse_list((0.5, "0.25"), "k", float, rule="r") == [0.5, 0.25]
  assert parse_list("", "k", rule="r", min_items=0) == []
  assert parse_list("7", "k", positive_int, rule="r") == [7]


@pytest.mark.parametrize("spec,kwargs", [
    ("1,x", {}),  # an item that does not parse
    ("", {}),  # fewer than min_items=1
    ("5", {"min_items": 2}),
    ("1,2,1", {"distinct": True}),
    ("0", {"item": positive_int}),
    ("2,1", {"valid": lambda v: v == sorted(v)}),
])
def test_parse_list_refuses_with_one_message(spec, kwargs):
  kwargs = {"item": int, **kwargs}
  with pytest.raises(ConfigError) as e:
    parse_list(spec, "some.key", rule="integers in order", **kwargs)
  assert str(e.value) == f"some.key must be integers in order, got {spec!r}"


def test_an_item_parser_may_name_the_bad_item():
  def item(text):
    raise ConfigError(f"some.key: {text!r} is bad")
  with pytest.raises(ConfigError) as e:
    parse_list("fine, worse", "some.key", item, rule="r")
  assert str(e.value) == "some.key: 'fine' is bad"


def test_list_settings_use_the_one_parser():
  from fmjax.decide.calibration import parse_rates
  from fmjax.decide.settings import export_platforms
  from fmjax.studies import settings as st
  from fmjax.studies.ablations.aggregators import aggregator_settings
  from fmjax.studies.ablations.checkpoints import listed_steps
  from fmjax.studies.ablations.compute import compute_settings
  from fmjax.studies.ablations.methods import method_settings
  from fmjax.studies.ablations.seeds import seed_settings
  assert parse_rates("0.01, 0.05") == [0.01, 0.05] and parse_rates((0.2,)) == [0.2]
  with pytest.raises(ConfigError) as e:
    parse_rates("0.01,1.5")
  assert str(e.value) == ("calibrate.false_alarm_rates must be comma-separated rates in (0, 1) "
                          "(e.g. '0.01,0.05'), got '0.01,1.5'")
  assert export_platforms("CPU, cuda") == ["cpu", "cuda"]
  with pytest.raises(ConfigError, match=r"^export.platforms must be a comma-separated subset of "
                                        r"\('cpu', 'cuda', 'rocm', 'tpu'\), got 'cpu,metal'$"):
    export_platforms("cpu,metal")
  assert st.scaling_batch_sizes("64, 16,256") == [16, 64, 256]
  for bad in ("8,x", "0,8", "8,8", ""):
    with pytest.raises(ConfigError, match="^scaling.batch_sizes must be comma-separated distinct "
                                          "integers >= 1, got"):
      st.scaling_batch_sizes(bad)
  assert trace_window(" 3 , 5 ", "k") == (3, 5) and trace_window(" ", "k") is None
  assert compute_settings("2x3, 4X4,") == [{"group": "grid", "num_seeds": 2, "num_times": 3},
                                              {"group": "K=T", "num_seeds": 4, "num_times": 4}]
  assert aggregator_settings("mean, q1") == [{"aggregator": "mean", "quantile": None},
                                                {"aggregator": "quantile", "quantile": 1.0}]
  assert seed_settings("0, 5,9") == [{"seed": 0}, {"seed": 5}, {"seed": 9}]
  assert listed_steps("") == [] and listed_steps("400,200") == [400, 200]
  assert method_settings("flow_mismatch, radar") == [{"method": "flow_mismatch"},
                                                        {"method": "radar"}]
  assert method_settings("reflect", None) == [{"method": "reflect"}]


# ---- study.* is checked like every section ----

@pytest.mark.parametrize("override,message", [
    ({"study.name": "nope"}, "study.name must be one of ('compute', 'aggregators', 'checkpoints', "
                             "'seeds', 'pooling', 'methods'), got 'nope'"),
    ({"study.compute": "0x2"}, "study.compute: '0x2' is not KxT with K, T >= 1 (e.g. 5x10); use "
                               "'paper' or a list."),
    ({"study.compute": "3x3,2x0"}, "study.compute: '2x0' is not KxT with K, T >= 1"),
    ({"study.compute": "5by5"}, "study.compute: '5by5' is not KxT"),
    ({"study.compute": ""}, "study.compute must be 'paper' or comma-separated KxT settings"),
    ({"study.aggregators": "min,q1.5"}, "study.aggregators: 'q1.5' is not min, mean or q<fraction>"),
    ({"study.aggregators": "median"}, "study.aggregators: 'median' is not min, mean or"),
    ({"study.seeds": "3"}, "study.seeds must be at least two distinct seeds (comma-separated "
                           "integers), got '3'"),
    ({"study.seeds": "1,x"}, "study.seeds must be at least two distinct seeds"),
    ({"study.steps": "0,200"}, "study.steps must be comma-separated checkpoint steps >= 1"),
    ({"study.methods": "flow_mismatch,padim"}, "study.methods must be comma-separated scorers among "
                                               "('flow_mismatch', "),
])
def test_bad_study_settings_are_config_errors(override, message):
  with pytest.raises(ConfigError) as e:
    configlib.validate(tiny_config(**override))
  lines = str(e.value).splitlines()
  assert lines[0] == "Invalid config:" and len(lines) == 2, lines
  assert lines[1].strip().startswith(message), lines[1]


def test_a_negative_time_budget_is_a_config_error():
  with pytest.raises(ConfigError, match=r"train.max_seconds must be >= 0 \(0: no limit\), got -5"):
    configlib.validate(tiny_config(**{"train.max_seconds": -5.0}))
  configlib.validate(tiny_config(**{"train.max_seconds": 30.0}))


def test_an_unknown_group_norm_is_a_config_error():
  with pytest.raises(ConfigError, match="model.group_norm must be sums, direct or fused, got 'fast'"):
    configlib.validate(tiny_config(**{"model.group_norm": "fast"}))


def test_every_problem_is_listed_at_once():
  config = tiny_config(**{"study.name": "nope", "study.compute": "0x2", "evaluate.num_seeds": 0,
                          "scaling.lr_rule": "cube", "model.dtype": "float31", "mode": "trian",
                          "calibrate.false_alarm_rates": "2"})
  errors = configlib.config_errors(config)
  assert [e.split(" ")[0] for e in errors] == [
      "mode", "model.dtype", "evaluate.num_seeds", "calibrate.false_alarm_rates", "study.name",
      "study.compute:", "scaling.lr_rule"]
  with pytest.raises(ConfigError) as e:
    configlib.validate(config)
  assert str(e.value) == "Invalid config:\n  " + "\n  ".join(errors)
  assert configlib.config_errors(tiny_config()) == []


def test_study_methods_must_fit_the_objective_only_in_a_methods_study():
  own = {"train.objective": "reflect", "evaluate.method": "reflect"}
  configlib.validate(tiny_config(**own))  # the default study.methods are CFM scorers: not used
  with pytest.raises(ConfigError, match=r"study.methods: \['flow_mismatch', 'reconflow', 'dflow'\] "
                                        r"do not score a model trained with train.objective=reflect"):
    configlib.validate(tiny_config(**own, **{"study.name": "methods"}))
  configlib.validate(tiny_config(**own, **{"study.name": "methods", "study.methods": "reflect"}))


def test_cli_refuses_a_bad_study_in_one_message(tmp_path):
  out = _cli("--config", "configs/studies.py:nope", "--workdir", str(tmp_path / "run"),
             "--mode=study", "--config.study.compute=0x2")
  assert out.returncode == 1 and "Traceback" not in out.stderr
  assert out.stderr.splitlines() == [
      "fmjax: error: Invalid config:",
      "  study.name must be one of ('compute', 'aggregators', 'checkpoints', 'seeds', 'pooling', "
      "'methods'), got 'nope'",
      "  study.compute: '0x2' is not KxT with K, T >= 1 (e.g. 5x10); use 'paper' or a list."]
  assert not (tmp_path / "run").exists()


# ---- each method's option defaults, without JAX ----

def test_method_option_table_agrees_with_the_registry():
  from fmjax import methods
  from fmjax.methods.settings import OBJECTIVE_OPTIONS, SCORER_OPTIONS
  assert list(SCORER_OPTIONS) == ["flow_mismatch", "reconflow", "dflow", "radar"]
  assert list(OBJECTIVE_OPTIONS) == ["reflect"]
  for kind, registry, table in (("scorer", methods.SCORERS, SCORER_OPTIONS),
                                ("objective", methods.OBJECTIVES, OBJECTIVE_OPTIONS)):
    assert set(table) <= set(registry), kind
    for name, method in registry.items():
      if name in table:  # the module's options are the table's entry, not a copy
        assert method.options is table[name], (kind, name)
      else:
        assert not method.options, (kind, name)
  c = configlib.base_config()
  assert c.evaluate.radar.to_dict() == {"t": 0.5, "edge_filter": False, "image_score": "top1"}
  assert c.evaluate.flow_mismatch.to_dict() == {"aggregator": "min", "quantile": None}
  assert c.train.reflect.to_dict() == {"max_regions": 3, "max_steps": 0}
  c.evaluate.radar.t = 0.25  # each config has its own copy
  assert configlib.base_config().evaluate.radar.t == 0.5 and SCORER_OPTIONS["radar"]["t"] == 0.5
