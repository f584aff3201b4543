"""The methods registry, nested method options, errors as one line, and evaluation's restore."""

import json

import pytest

from fmjax import configlib
from fmjax.train import restore
from fmjax import methods
from fmjax import main as fm_main
from fmjax.core.errors import CheckpointMismatchError, ConfigError

from conftest import tiny_config
from test_main import _cli

CFM_METHODS = ("flow_mismatch", "reconflow", "dflow", "radar")


def test_registry_is_consistent_with_the_config():
  assert set(methods.SCORERS) == {"flow_mismatch", "reconflow", "dflow", "radar", "reflect",
                                  "tccm", "wtflow"}
  assert set(methods.OBJECTIVES) == {"cfm", "reflect", "tccm", "wtflow"}
  c = configlib.base_config()
  for s in methods.SCORERS.values():
    assert s.objective in methods.OBJECTIVES and s.title and s.description
    assert set(s.uses) <= set(methods.base.SHARED_KEYS)
    if s.options:
      assert c.evaluate[s.name].to_dict() == {k: (None if k == "quantile" else v)
                                              for k, v in s.options.items()}
    assert s.check(methods.scorer_options(c.evaluate, s.name)) == []
  assert methods.scorers_for("cfm") == list(CFM_METHODS)
  with pytest.raises(ConfigError, match="use one of flow_mismatch, reconflow, dflow, radar, reflect, "
                                        "tccm, wtflow"):
    methods.scorer("padim")
  with pytest.raises(ConfigError, match="evaluate.method must be one of .*'radar'.*got 'padim'"):
    configlib.validate(tiny_config(**{"evaluate.method": "padim"}))


@pytest.mark.parametrize("old,new", sorted(configlib.RENAMED_KEYS.items()))
def test_old_flat_keys_name_the_new_key(old, new):
  with pytest.raises(ConfigError, match=f"{old} is now {new}"):
    configlib.validate(tiny_config(**{old: 1}))


def test_cli_refuses_an_old_flat_key_in_one_line(tmp_path):
  out = _cli("--config", "configs/quickstart.py", "--workdir", str(tmp_path),
             "--config.evaluate.reconflow_t_init=0.3")
  assert out.returncode == 1
  assert "evaluate.reconflow_t_init is now evaluate.reconflow.t_init" in out.stderr
  assert "Traceback" not in out.stderr and not (tmp_path / "checkpoints").exists()


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys):
  def config_mistake(*args):
    raise ConfigError("evaluate.num_seeds (K) must be >= 1")

  monkeypatch.setattr(fm_main, "run", config_mistake)
  with pytest.raises(SystemExit) as e:
    fm_main.main(["fmjax"])
  assert e.value.code == 1
  assert capsys.readouterr().err == "fmjax: error: evaluate.num_seeds (K) must be >= 1\n"

  def internal_bug(*args):
    raise ValueError("shapes (3,) and (4,) do not broadcast")

  monkeypatch.setattr(fm_main, "run", internal_bug)
  with pytest.raises(ValueError, match="do not broadcast"):  # not swallowed into one line
    fm_main.main(["fmjax"])


@pytest.fixture(scope="module")
def cfm_run(tmp_path_factory):
  run = tmp_path_factory.mktemp("cfm")
  fm_main.run(tiny_config(**{"train.amsgrad": True}), str(run), "train")
  return run


@pytest.mark.parametrize("method", CFM_METHODS)
def test_each_cfm_method_evaluates_and_records_only_its_options(cfm_run, method):
  overrides = {"evaluate.method": method, "evaluate.dflow.iterations": 2}
  result = fm_main.run(tiny_config(**overrides), str(cfm_run), "evaluate")
  saved = json.loads((cfm_run / "eval" / "metrics.json").read_text())
  scorer = methods.scorer(method)
  assert saved["settings"]["method"] == result.settings.method == method
  assert set(saved["settings"]["method_options"]) == set(scorer.uses) | set(scorer.options)
  assert (cfm_run / "eval" / "metrics.md").read_text().startswith(f"# {scorer.title} evaluation")
  assert 0.0 <= saved["pixel_auroc"] <= 1.0


def test_radar_isolation_forest_scores_per_category(cfm_run):
  from fmjax.data import load_dataset
  from fmjax.score.session import ScoringSession
  from fmjax.methods.radar import isolation_forest_scores
  config = tiny_config(**{"evaluate.method": "radar", "evaluate.radar.image_score": "isolation_forest"})
  result = fm_main.run(config, str(cfm_run), "evaluate")
  assert result.settings.method_options["image_score"] == "isolation_forest"
  # The same scores from the maps: one forest per category, fitted on its normal training maps.
  dataset = load_dataset(config.data)
  session = ScoringSession.load(config, str(cfm_run), dataset.class_names)
  train_maps, _, _ = session.score(dataset.train_images, dataset.train_classes)
  test_maps, _, _ = session.score(dataset.test_images, dataset.test_classes)
  for ci in range(dataset.num_classes):
    forest = isolation_forest_scores(train_maps[dataset.train_classes == ci], config.evaluate.seed)
    sel = dataset.test_classes == ci
    expected = forest(test_maps[sel])
    got = [img.score for img, s in zip(result.images, sel) if s]
    assert got == pytest.approx(list(expected), rel=1e-6)


def test_evaluation_restores_parameters_only(cfm_run):
  # The optimiser's settings do not matter to evaluation (its state is not read), the compute
  # dtype neither; any architecture field does, including one the code does not know yet.
  config = tiny_config(**{"train.amsgrad": False, "train.ema_decay": 0.5, "model.dtype": "bfloat16"})
  assert fm_main.run(config, str(cfm_run), "evaluate").settings.checkpoint_step == 4
  new_field = tiny_config()
  new_field.model.skip_scale = 0.7
  assert restore.model_meta(new_field, ["a"])["skip_scale"] == 0.7
  with pytest.raises(CheckpointMismatchError, match="skip_scale: checkpoint has None, config has 0.7"):
    fm_main.run(new_field, str(cfm_run), "evaluate")


# The packages of fmjax/ in data-flow order: a module imports only from its own package or
# from those before it. main, deploy (the entry points) and configlib (the defaults, recipes
# and validation) sit above them all, and no package imports them.
LAYERS = ("core", "data", "model", "methods", "train", "score", "decide", "report", "studies")


def _fmjax_imports(path):
  """The fmjax modules a file imports, as dotted names (`from fmjax.x import y` gives fmjax.x.y
  too, since y may be a module)."""
  import ast
  tree = ast.parse(path.read_text())
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fmjax"):
      names.add(node.module)
      names.update(f"{node.module}.{a.name}" for a in node.names)
    elif isinstance(node, ast.Import):
      names.update(a.name for a in node.names if a.name.startswith("fmjax"))
  return names


def test_layers_import_only_downwards():
  import pathlib
  package_root = pathlib.Path(configlib.__file__).parent  # fmjax/configlib.py
  modules = sorted(package_root.rglob("*.py"))
  layers = {p.relative_to(package_root).parts[0] for p in modules if p.parent != package_root}
  assert layers == set(LAYERS)
  upward = []
  for path in modules:
    if path.parent == package_root:
      continue  # the entry points
    own = LAYERS.index(path.relative_to(package_root).parts[0])
    for name in _fmjax_imports(path):
      parts = name.split(".")
      if len(parts) > 1 and (parts[1] not in LAYERS or LAYERS.index(parts[1]) > own):
        upward.append(f"{path.relative_to(package_root)} imports {name}")
  assert not upward, upward


def test_deploy_needs_jax_or_onnxruntime_and_numpy_only():
  import ast
  import pathlib
  tree = ast.parse(pathlib.Path(fm_main.__file__).with_name("deploy.py").read_text())
  imported = ({a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names} |
              {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} |
              {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names})
  # The exported scorer's loader needs jax and numpy only (and reads files with PIL on demand);
  # fmjax.score.tiling and maps and fmjax.decide.normalize and regions are numpy and scipy,
  # fmjax.core.console the standard library and tqdm, fmjax.core.files and xla_cpu the standard
  # library, fmjax.core.threefry numpy, fmjax.core.records, errors and fingerprint the standard
  # library and fmjax.core.files; an ONNX export runs on onnxruntime or OpenVINO (threading:
  # OpenVINO's one infer request behind a lock; tests/test_onnx.py runs both with jax blocked).
  allowed = {"argparse", "dataclasses", "json", "os", "sys", "zipfile", "jax", "numpy",
             "fmjax.core.ids", "fmjax.core.records", "Fields", "read_json_file",
             "fmjax.core.errors", "UserError", "fingerprint",
             "image_ids", "__future__", "annotations", "fmjax.data.decode", "IMAGE_EXTENSIONS",
             "read_image_and_size", "matplotlib.colors", "Normalize", "PIL", "Image",
             "fmjax.core", "plots", "files", "fmjax.score", "maps", "tiling", "ragged", "console",
             "fmjax.decide", "normalize", "regions", "xla_cpu", "threefry", "onnxruntime",
             "openvino", "threading"}
  assert imported <= allowed, imported - allowed
