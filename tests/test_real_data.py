"""Training and evaluation on real images: MVTec AD bottle at 32x32 (configs/cpu_bottle.py).

The procedural data scores near 100% whatever the scorer does; this test fails when the
trainer or the scorer breaks on real data. It needs ../shared/data beside the repository
and skips with a message without it. It trains the recipe's model for 500 of its 1,500 steps
(about 8 minutes on a 2-core CPU), which measured image AUROC 0.908, pixel AUROC 0.789 and
PRO 0.570 here; it requires 0.85 and 0.72 (an untrained or broken scorer is near 0.5).
"""

import importlib.util

import pytest

from fmjax import main as fm_main

from conftest import REPO


def _config(name):
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_small_unet_detects_bottle_defects(shared_data, tmp_path):
  config = _config("cpu_bottle")
  config.data.root = str(shared_data / "mvtec")
  config.mesh.num_devices = 1  # as fmjax.main on a CPU (one device on both cores), not the 8 simulated ones
  config.train.num_steps = 500  # a third of the recipe, to keep the suite short
  result = fm_main.run(config, str(tmp_path), "train_and_evaluate")
  settings = result.settings
  assert settings.method_options == {"num_seeds": 10, "num_times": 10, "aggregator": "min",
                                     "quantile": None}
  assert settings.num_test_images == 83 and settings.checkpoint_step == 500
  pooled = result.pooled
  print(f"bottle 32x32: image AUROC {pooled.image_auroc:.4f}, pixel AUROC "
        f"{pooled.pixel_auroc:.4f}, PRO {pooled.pixel_aupro:.4f}")
  assert pooled.image_auroc >= 0.85, pooled.image_auroc
  assert pooled.pixel_auroc >= 0.72, pooled.pixel_auroc
  _bf16_keeps_the_aurocs(config, tmp_path)


def _bf16_keeps_the_aurocs(config, workdir):
  """The model's ONNX export on OpenVINO in bf16 (issue 28: bf16 only if the bottle image and
  pixel AUROCs stay within 0.002 of float32): both AUROCs, by sklearn, of all 83 test images
  scored in f32 and in bf16. Where the CPU has no bf16 instructions OpenVINO runs f32 and the
  check holds trivially (printed)."""
  if importlib.util.find_spec("openvino") is None or importlib.util.find_spec("jax2onnx") is None:
    pytest.skip("the bf16 check needs openvino and jax2onnx")
  from sklearn.metrics import roc_auc_score

  from fmjax import deploy
  from fmjax.data import load_dataset
  config.export.format = "onnx"
  fm_main.run(config, str(workdir), "export")
  data = load_dataset(config.data)
  aurocs = {}
  for precision in ("f32", "bf16"):
    scorer = deploy.load(str(workdir / "export"), runtime="openvino", precision=precision)
    scored = scorer(data.test_images, "bottle")
    assert scored.heatmaps.shape == data.test_masks.shape[:3]
    aurocs[scorer.tiles.precision] = (roc_auc_score(data.test_labels, scored.scores),
                                      roc_auc_score(data.test_masks.reshape(-1) > 0,
                                                    scored.heatmaps.reshape(-1)))
  print(f"bottle 32x32 on OpenVINO: image / pixel AUROC {aurocs}")
  f32 = aurocs["f32"]
  assert f32[0] >= 0.85 and f32[1] >= 0.72, f32
  for image, pixel in aurocs.values():
    assert abs(image - f32[0]) <= 0.002 and abs(pixel - f32[1]) <= 0.002, aurocs


def test_fullres_flag_set_scores_900x900_bottles_at_their_size(shared_data, tmp_path):
  """configs/mvtec.py:fullres on the 10 original bottle files, with a tiny U-Net for 2 steps
  (stride 8; its only attention is the middle block's, over 32x32 positions of a 256x256
  tile): trains on 128x128 crops and scores every 900x900 test image in 256x256 tiles into a
  900x900 map, with pixel metrics against the 900x900 masks."""
  spec = importlib.util.spec_from_file_location("mvtec", REPO / "configs" / "mvtec.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("fullres")
  config.data.root = str(shared_data / "mvtec_fullres_sample")
  config.data.categories = "bottle"  # the sample's only category
  config.model.update(channels=8, num_res_blocks=1, channel_mult=(1, 1, 2, 2), attention_rates=(),
                      head_channels=8, norm_groups=4, dtype="float32")
  config.train.update(num_steps=2, batch_size=2, checkpoint_every_steps=2, log_every_steps=1)
  config.evaluate.update(num_seeds=1, num_times=1, batch_size=8, num_heatmaps=1)
  config.mesh.num_devices = 1
  result = fm_main.run(config, str(tmp_path), "train_and_evaluate")
  assert [(i.width, i.height) for i in result.images] == [(900, 900)] * 4
  assert result.settings.num_test_images == 4
  for key in ("image_auroc", "pixel_auroc", "pixel_aupro"):
    assert 0 <= getattr(result.pooled, key) <= 1, key  # defined: masks and maps of one size
