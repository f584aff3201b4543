"""The data sets of `fmjax.data.sets`, each read from a small tree in its own layout made here
(generated images with the real file extensions and names, masks where the set has them)."""

import json

import numpy as np
import pytest
from PIL import Image

from fmjax import configlib, main as fm_main
from fmjax.core.errors import DataLayoutError
from fmjax.data import DATASETS, load_dataset, sets
from tiny import tiny_config

SIZE = 16


def _image(path, seed, mode="RGB", shape=(SIZE, SIZE)):
  rng = np.random.default_rng(seed)
  path.parent.mkdir(parents=True, exist_ok=True)
  pixels = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
  Image.fromarray(pixels).convert(mode).save(path)
  return pixels


def _mask(path, box):
  """A 0/255 mask with the rectangle `box` = (y0, y1, x0, x1) set; returns it as {0, 1}."""
  m = np.zeros((SIZE, SIZE), np.uint8)
  y0, y1, x0, x1 = box
  m[y0:y1, x0:x1] = 1
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(m * 255).save(path)
  return m


def _config(name, root, categories=""):
  c = configlib.base_config()
  c.data.name, c.data.root, c.data.categories = name, str(root), categories
  c.data.image_size, c.data.val_fraction = SIZE, 0.0
  return c.data


def _check(dataset, expected):
  """expected: [(category, split, label, mask or None)] in the dataset's order per split."""
  test = [e for e in expected if e[1] == "test"]
  train = [e for e in expected if e[1] == "train"]
  assert len(dataset.train_images) == len(train) and len(dataset.test_images) == len(test)
  names = dataset.class_names
  assert [names[c] for c in dataset.train_classes] == [e[0] for e in train]
  assert [names[c] for c in dataset.test_classes] == [e[0] for e in test]
  assert dataset.test_labels.tolist() == [e[2] for e in test]
  for got, (_, _, label, mask) in zip(dataset.test_masks, test):
    np.testing.assert_array_equal(got, mask if mask is not None else np.zeros((SIZE, SIZE)))


def test_the_registry_names_every_set_once():
  registry = sets.registry()
  assert list(registry) == list(sets.MODULES) and DATASETS == ("synthetic",) + sets.MODULES
  assert registry["mpdd"].categories == ("bracket_black", "bracket_brown", "bracket_white",
                                         "connector", "metal_plate", "tubes")
  assert registry["btad"].categories == ("01", "02", "03")


def _mpdd(root):
  expected = []
  for i in range(3):
    _image(root / "tubes" / "train" / "good" / f"{i:03d}.png", i)
    expected.append(("tubes", "train", 0, None))
  for i, defect in enumerate(("anomalous", "anomalous")):  # defect folders in sorted order
    _image(root / "tubes" / "test" / defect / f"{i:03d}.png", 20 + i)
    expected.append(("tubes", "test", 1, _mask(root / "tubes" / "ground_truth" / defect /
                                               f"{i:03d}_mask.png", (2, 6 + i, 3, 9))))
  _image(root / "tubes" / "test" / "good" / "000.png", 10)
  expected.append(("tubes", "test", 0, None))
  return expected


def test_mpdd_reads_its_mvtec_layout(tmp_path):
  root = tmp_path / "MPDD"
  expected = _mpdd(root)
  dataset = load_dataset(_config("mpdd", root, "tubes"))
  _check(dataset, expected)
  assert dataset.test_defects == ["anomalous", "anomalous", "good"]
  with pytest.raises(DataLayoutError, match=r"Categories \['connector'\] not found"):
    load_dataset(_config("mpdd", root, "connector"))


def _btad(root):
  """Category 01 in .bmp, 02 in .png, as BTAD ships them; masks .png beside ground_truth/ko."""
  expected = []
  for cat, ext in (("01", "bmp"), ("02", "png")):
    for i in range(2):
      _image(root / cat / "train" / "ok" / f"{i:04d}.{ext}", i)
      expected.append((cat, "train", 0, None))
    _image(root / cat / "test" / "ok" / f"0000.{ext}", 5)
    expected.append((cat, "test", 0, None))
    for i in range(2):
      _image(root / cat / "test" / "ko" / f"{i:04d}.{ext}", 7 + i)
      expected.append((cat, "test", 1, _mask(root / cat / "ground_truth" / "ko" / f"{i:04d}.png",
                                             (1 + i, 8, 4, 12))))
  return expected


def test_btad_reads_ok_ko_with_bmp_and_png(tmp_path):
  root = tmp_path / "BTech_Dataset_transformed"
  expected = _btad(root)
  dataset = load_dataset(_config("btad", root, "01,02"))
  order = [e for e in expected if e[1] == "train"] + [e for e in expected if e[1] == "test"]
  _check(dataset, order)
  assert set(dataset.test_defects) == {"good", "ko"}
  assert all(p.endswith(".bmp") for p, c in zip(dataset.test_paths, dataset.test_classes) if c == 0)
  (root / "02" / "ground_truth" / "ko" / "0001.png").unlink()
  with pytest.raises(DataLayoutError, match=r"0001\.png has no mask .*0001\.png"):
    load_dataset(_config("btad", root, "02"))
  image_level = _config("btad", root, "02")
  image_level.image_level_only = True
  assert load_dataset(image_level).test_labels.tolist() == [0, 1, 1]
  with pytest.raises(DataLayoutError, match=r"Categories \['03'\] not found"):
    load_dataset(_config("btad", root))  # the default is all three


def _ksdd2(root):
  expected = []
  for i in range(4):
    _image(root / "train" / f"{10000 + i}.png", i)
    defective = i == 2
    _mask(root / "train" / f"{10000 + i}_GT.png", (3, 7, 3, 7) if defective else (0, 0, 0, 0))
    if not defective:
      expected.append(("ksdd2", "train", 0, None))
  for i in range(4):
    _image(root / "test" / f"{20000 + i}.png", 10 + i)
    box = (2, 9, 5, 6 + i) if i % 2 else (0, 0, 0, 0)
    mask = _mask(root / "test" / f"{20000 + i}_GT.png", box)
    expected.append(("ksdd2", "test", i % 2, mask if i % 2 else None))
  return expected


def test_ksdd2_labels_by_ground_truth_and_trains_on_normals_only(tmp_path, recwarn):
  root = tmp_path / "KolektorSDD2"
  expected = _ksdd2(root)
  dataset = load_dataset(_config("ksdd2", root))
  _check(dataset, expected)
  assert dataset.class_names == ["ksdd2"] and dataset.test_defects == ["good", "defect"] * 2
  assert not any(p.endswith("_GT.png") for p in dataset.train_paths + dataset.test_paths)
  assert any("1 anomalous images of train/ left out" in str(w.message) for w in recwarn)
  (root / "test" / "20003_GT.png").unlink()
  with pytest.raises(DataLayoutError, match=r"20003\.png has no ground truth"):
    load_dataset(_config("ksdd2", root))


def test_an_unknown_set_lists_the_known_ones(tmp_path):
  c = tiny_config(**{"data.name": "kolektor"})
  with pytest.raises(ValueError, match=r"data.name must be one of .*'btad', 'ksdd2'"):
    fm_main.run(c, str(tmp_path / "run"), "train")


def _kolektorsdd(root):
  train, test = [], []
  for number in (1, 2, 41, 42):
    for part in range(3):
      stem = root / f"kos{number:02d}" / f"Part{part}"
      _image(stem.with_suffix(".jpg"), number * 10 + part)
      defective = part == 1
      mask = _mask(stem.parent / f"Part{part}_label.bmp", (4, 9, 2, 14) if defective else (0, 0, 0, 0))
      if defective:
        test.append(("kolektorsdd", "test", 1, mask))
      elif number <= 40:
        train.append(("kolektorsdd", "train", 0, None))
      else:
        test.append(("kolektorsdd", "test", 0, None))
  return train + test


def test_kolektorsdd_fixed_split_by_part_folder(tmp_path):
  root = tmp_path / "KolektorSDD"
  expected = _kolektorsdd(root)
  dataset = load_dataset(_config("kolektorsdd", root))
  _check(dataset, expected)
  assert all("/kos0" in p for p in dataset.train_paths)  # kos01, kos02 only
  assert sum("kos4" in p for p in dataset.test_paths) == 6  # all of kos41 and kos42
  (root / "kos42" / "Part2_label.bmp").unlink()
  with pytest.raises(DataLayoutError, match=r"Part2\.jpg has no label"):
    load_dataset(_config("kolektorsdd", root))


# ---------------------------------------------------------------------------------------------
# MVTec AD 2: validation normals for calibration, test_public labelled, private tests unlabeled.

PRIVATE_SHAPE = (20, 24)  # (height, width) of the private test images: not the scored 16x16


def _ad2(root, cat="can"):
  """A tiny MVTec AD 2 category: 3 train, 2 validation, 1+2 public test, 2+2 private."""
  expected = []
  for i in range(3):
    _image(root / cat / "train" / "good" / f"{i:03d}_regular.png", i)
    expected.append((cat, "train", 0, None))
  for i in range(2):
    _image(root / cat / "validation" / "good" / f"{i:03d}_regular.png", 50 + i)
  _image(root / cat / "test_public" / "good" / "000_regular.png", 60)
  expected.append((cat, "test", 0, None))
  for i, variant in enumerate(("overexposed", "regular")):
    _image(root / cat / "test_public" / "bad" / f"{i:03d}_{variant}.png", 70 + i)
    mask = _mask(root / cat / "test_public" / "ground_truth" / "bad" /
                 f"{i:03d}_{variant}_mask.png", (2 + i, 9, 3, 12))
    expected.append((cat, "test", 1, mask))
  for split, suffix in (("test_private", "regular"), ("test_private_mixed", "mixed")):
    for i in range(2):
      _image(root / cat / split / f"{i:03d}_{suffix}.png", 80 + i, shape=PRIVATE_SHAPE)
  return expected


def test_mvtec_ad2_splits_validation_and_masks(tmp_path):
  root = tmp_path / "mvtec_ad_2"
  expected = _ad2(root)
  dataset = load_dataset(_config("mvtec_ad2", root, "can"))
  _check(dataset, expected)
  assert len(dataset.val_images) == 2 and all("/validation/good/" in p for p in dataset.val_paths)
  assert dataset.test_defects == ["good", "bad", "bad"]
  assert not any("test_private" in p for p in dataset.test_paths + dataset.train_paths)
  config = _config("mvtec_ad2", root, "can")
  config.val_fraction = 0.1
  with pytest.raises(Exception, match="ships its own validation normals"):
    load_dataset(config)
  c = tiny_config(**{"data.name": "mvtec_ad2", "data.root": str(root)})
  with pytest.raises(ValueError, match="data.val_fraction must be 0 for mvtec_ad2"):
    fm_main.run(c, str(tmp_path / "run"), "train")


def test_mvtec_ad2_layout_mistakes_are_one_line(tmp_path):
  root = tmp_path / "ad2"
  _ad2(root)
  gt = root / "can" / "test_public" / "ground_truth" / "bad"
  (gt / "001_regular_mask.png").rename(gt / "001_regular_mask.bmp")
  with pytest.raises(DataLayoutError, match=r"found .*001_regular_mask\.bmp, but the layout "
                                            r"expects .*001_regular_mask\.png \(a \.png file\)"):
    load_dataset(_config("mvtec_ad2", root, "can"))
  (gt / "001_regular_mask.bmp").rename(gt / "001_regular_mask.png")
  _mask(gt / "005_shift_1_mask.png", (0, 2, 0, 2))
  with pytest.raises(DataLayoutError, match=r"mask .*005_shift_1_mask\.png matches no test image"):
    load_dataset(_config("mvtec_ad2", root, "can"))
  for f in gt.iterdir():
    f.unlink()
  gt.rmdir()
  with pytest.raises(DataLayoutError, match=r"the masks folder .*ground_truth/bad is missing"):
    load_dataset(_config("mvtec_ad2", root, "can"))


def test_mvtec_ad2_calibrates_on_validation_and_writes_the_server_format(tmp_path):
  import tarfile
  import tifffile
  root = tmp_path / "mvtec_ad_2"
  _ad2(root, "can")
  _ad2(root, "vial")
  workdir = tmp_path / "run"
  c = tiny_config(**{"data.name": "mvtec_ad2", "data.root": str(root), "data.val_fraction": 0.0,
                     "data.categories": "can,vial", "data.image_size": SIZE,
                     "evaluate.aupimo_fpr": "1e-2,1e-1"})
  result = fm_main.run(c, str(workdir), "train_and_evaluate")
  metrics = json.loads((workdir / "eval" / "metrics.json").read_text())
  assert 0 <= metrics["pixel_aupimo"] <= 1 and metrics["settings"]["aupimo_fpr"] == [0.01, 0.1]
  assert result.pooled.pixel_aupimo == metrics["pixel_aupimo"]
  calibration = json.loads((workdir / "calibration.json").read_text())
  assert calibration["categories"]["can"]["num_held_out"] == 2  # validation/good of can
  # The private tests in the server's format, each map at its image's size (20x24, scored at
  # 16x16 and enlarged).
  out = fm_main.run(c, str(workdir), "score")
  folder = workdir / "scores" / "mvtec_ad2_submission"
  assert out["thresholded"] and out["images"][("vial", "test_private_mixed")] == 2
  pixel_threshold = json.loads((workdir / "calibration.json").read_text())
  tiffs = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.tiff"))
  assert tiffs == [f"anomaly_images/{c}/{s}/{i:03d}_{x}.tiff" for c in ("can", "vial")
                   for s, x in (("test_private", "regular"), ("test_private_mixed", "mixed"))
                   for i in range(2)]
  for tiff in folder.rglob("*.tiff"):
    heat = tifffile.imread(tiff)
    assert heat.dtype == np.float16 and heat.shape == PRIVATE_SHAPE and np.isfinite(heat).all()
    rel = tiff.relative_to(folder / "anomaly_images")
    png = np.asarray(Image.open((folder / "anomaly_images_thresholded" / rel).with_suffix(".png")))
    assert png.dtype == np.uint8 and set(np.unique(png)) <= {0, 255}
    category = rel.parts[0]
    cal = pixel_threshold["categories"][category]
    threshold = cal["pixel"][next(iter(cal["pixel"]))]["threshold"]
    # float16 rounding may move a pixel within a half-ulp of the threshold
    near = np.isclose(heat.astype(np.float32), threshold, rtol=2e-3)
    np.testing.assert_array_equal((png == 255)[~near], (heat.astype(np.float32) > threshold)[~near])
  with tarfile.open(str(folder) + ".tar.gz") as tar:
    names = sorted(n for n in tar.getnames() if n.endswith(".tiff"))
  assert names == [f"mvtec_ad2_submission/{t}" for t in tiffs]


# ---------------------------------------------------------------------------------------------
# MVTec LOCO AD: regions with saturation, logical and structural anomalies reported apart.

LOCO_CONFIG = [
    {"defect_name": "missing_pin", "pixel_value": 255, "saturation_threshold": 20,
     "relative_saturation": False},
    {"defect_name": "scratch", "pixel_value": 254, "saturation_threshold": 0.5,
     "relative_saturation": True}]


def _region(path, box, value):
  m = np.zeros((SIZE, SIZE), np.uint8)
  y0, y1, x0, x1 = box
  m[y0:y1, x0:x1] = value
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(m).save(path)
  return (m > 0).astype(np.uint8)


def _loco(root, cat="pushpins"):
  """A tiny LOCO category: 3 train, 2 validation, 2 good + 2 logical + 2 structural test."""
  base = root / cat
  base.mkdir(parents=True)
  (base / "defects_config.json").write_text(json.dumps(LOCO_CONFIG))
  expected = []
  for i in range(3):
    _image(base / "train" / "good" / f"{i:03d}.png", i)
    expected.append((cat, "train", 0, None))
  for i in range(2):
    _image(base / "validation" / "good" / f"{i:03d}.png", 40 + i)
  for i in range(2):
    _image(base / "test" / "good" / f"{i:03d}.png", 50 + i)
  anomalous = []
  for kind, seed in (("logical_anomalies", 60), ("structural_anomalies", 70)):
    for i in range(2):
      _image(base / "test" / kind / f"{i:03d}.png", seed + i)
      gt = base / "ground_truth" / kind / f"{i:03d}"
      union = _region(gt / "000.png", (1, 6, 1 + i, 8), 255)
      if i == 1:  # a second region: its own file
        union |= _region(gt / "001.png", (10, 14, 9, 15), 254)
      anomalous.append((cat, "test", 1, union))
  return expected + [(cat, "test", 0, None)] * 2 + anomalous


def test_mvtec_loco_regions_validation_and_groups(tmp_path):
  root = tmp_path / "mvtec_loco_anomaly_detection"
  expected = _loco(root)
  dataset = load_dataset(_config("mvtec_loco", root, "pushpins"))
  _check(dataset, expected)
  assert dataset.test_defects == ["good"] * 2 + ["logical_anomalies"] * 2 + ["structural_anomalies"] * 2
  assert len(dataset.val_images) == 2 and dataset.defect_groups == ("logical_anomalies",
                                                                   "structural_anomalies")
  regions = dataset.test_regions
  assert [len(r) for r in regions] == [0, 0, 1, 2, 1, 2]
  assert [(r.saturation, r.relative) for r in regions[3]] == [(20.0, False), (0.5, True)]
  assert regions[3][1].path.endswith("logical_anomalies/001/001.png")


def test_mvtec_loco_layout_mistakes_are_one_line(tmp_path):
  root = tmp_path / "loco"
  _loco(root)
  base = root / "pushpins"
  config = base / "defects_config.json"
  for text, message in (
      ("{not json", r"defects_config\.json is not valid JSON"),
      (json.dumps({"defects": []}), r"defects_config\.json must be a JSON list"),
      (json.dumps([{"defect_name": "x", "pixel_value": 255}]),
       r"entry 0 must have the keys \['defect_name', 'pixel_value', 'saturation_threshold'"),
      (json.dumps([dict(LOCO_CONFIG[1], saturation_threshold=3)]),
       r"entry 0: a relative saturation_threshold is a fraction in \(0, 1\], got 3")):
    config.write_text(text)
    with pytest.raises(DataLayoutError, match=message):
      load_dataset(_config("mvtec_loco", root, "pushpins"))
  config.write_text(json.dumps(LOCO_CONFIG[:1]))  # value 254 is no longer listed
  with pytest.raises(DataLayoutError, match=r"001/001\.png has pixel value 254, which .*"
                                            r"defects_config\.json does not list"):
    load_dataset(_config("mvtec_loco", root, "pushpins"))
  config.write_text(json.dumps(LOCO_CONFIG))
  gt = base / "ground_truth" / "structural_anomalies" / "000"
  gt.rename(gt.with_name("000_moved"))
  with pytest.raises(DataLayoutError, match=r"structural_anomalies/000\.png has no mask folder "
                                            r".*structural_anomalies/000/"):
    load_dataset(_config("mvtec_loco", root, "pushpins"))
  (base / "test" / "structural_anomalies" / "000.png").rename(
      base / "test" / "structural_anomalies" / "000_moved.png")
  (base / "ground_truth" / "logical_anomalies" / "007").mkdir()
  with pytest.raises(DataLayoutError, match=r"mask folder .*logical_anomalies/007/ matches no image"):
    load_dataset(_config("mvtec_loco", root, "pushpins"))


def test_mvtec_loco_evaluates_spro_and_logical_structural_apart(tmp_path):
  root = tmp_path / "loco"
  _loco(root)
  workdir = tmp_path / "run"
  c = tiny_config(**{"data.name": "mvtec_loco", "data.root": str(root), "data.val_fraction": 0.0,
                     "data.categories": "pushpins", "data.image_size": SIZE,
                     "evaluate.aupimo_fpr": "1e-2,1e-1"})
  result = fm_main.run(c, str(workdir), "train_and_evaluate")
  metrics = json.loads((workdir / "eval" / "metrics.json").read_text())
  assert 0 <= metrics["pixel_spro"] <= 1 and 0 <= metrics["pixel_aupimo"] <= 1
  groups = metrics["by_defect_group"]
  assert list(groups) == ["logical_anomalies", "structural_anomalies"]
  calibration = json.loads((workdir / "calibration.json").read_text())
  assert calibration["categories"]["pushpins"]["num_held_out"] == 2  # validation/good
  # Each group: its two anomalous images with the two normal ones, scored as the whole split.
  scores = {i.path: i.score for i in result.images}
  from sklearn.metrics import roc_auc_score
  for group, g in groups.items():
    paths = [p for p in scores if f"/{group}/" in p or "/test/good/" in p]
    labels = [int("/test/good/" not in p) for p in paths]
    auroc = roc_auc_score(labels, [scores[p] for p in paths])
    assert g["per_category"]["pushpins"]["image_auroc"] == pytest.approx(auroc)
    assert 0 <= g["mean"]["pixel_spro"] <= 1
  text = (workdir / "eval" / "metrics.md").read_text()
  assert "### logical_anomalies" in text and "sPRO" in text and "Mean over logical_anomalies" in text
  _check_group_tables(workdir / "eval" / "report.html", groups)


def _check_group_tables(path, groups):
  """report.html in headless Chromium: one table per defect group, its cells the group's
  metrics in percent (skipped where Chromium is not installed)."""
  from test_report_page import chromium_available, open_page, start_browser
  if not chromium_available():
    return
  driver = start_browser()
  try:
    open_page(driver, path)
    for gi, g in enumerate(groups.values()):
      header = [c.text for c in driver.find_elements("css selector", f"#group-table-{gi} th")]
      rows = driver.find_elements("css selector", f"#group-table-{gi} tbody tr")
      cells = [[c.text for c in r.find_elements("css selector", "td")] for r in rows]
      assert [r[0] for r in cells] == ["pushpins", "Mean"]
      spro = g["per_category"]["pushpins"]["pixel_spro"]
      assert cells[0][header.index("sPRO")] == f"{100 * spro:.1f}"
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
  finally:
    driver.quit()


def test_loco_regions_at_a_smaller_scored_size_scale_absolute_saturation(tmp_path):
  from fmjax.report.evaluate import saturated_regions
  root = tmp_path / "loco"
  _loco(root)
  config = _config("mvtec_loco", root, "pushpins")
  config.image_size = SIZE // 2
  dataset = load_dataset(config)
  maps = np.zeros((len(dataset.test_images), SIZE // 2, SIZE // 2), np.float32)
  regions = saturated_regions(dataset, maps)
  absolute, relative = regions[3]
  # 20 file pixels at a quarter of the pixels: 5, at most the region's area; relative: half of
  # the region's area at the scored size, rounded down.
  assert absolute.saturation == min(5.0, absolute.mask.sum())
  assert relative.saturation == max(1, int(0.5 * relative.mask.sum()))
  assert absolute.mask.shape == (SIZE // 2, SIZE // 2)


# ---------------------------------------------------------------------------------------------
# Real-IAD: per-category JSON meta files, five views as images of the category.

def _realiad(root, cat="audiojack", nested=False):
  images = root / "realiad_1024" / cat
  train, test, expected = [], [], []
  for s in range(2):
    for view in (1, 2):
      rel = f"OK/S{s:04d}/{cat}_{s:04d}_OK_C{view}_2023.jpg"
      _image(images / rel, s * 10 + view)
      train.append({"category": cat, "anomaly_class": "OK", "image_path": rel, "mask_path": None})
      expected.append((cat, "train", 0, None))
  rel = f"OK/S0009/{cat}_0009_OK_C1_2023.jpg"
  _image(images / rel, 90)
  test.append({"category": cat, "anomaly_class": "OK", "image_path": rel, "mask_path": None})
  test_expected = [(cat, "test", 0, None)]
  for view in (1, 3):
    rel = f"NG/AK/S0010/{cat}_0010_NG_AK_C{view}_2023.jpg"
    _image(images / rel, 100 + view)
    mask = _mask((images / rel).with_suffix(".png"), (2, 7, 2 + view, 11))
    test.append({"category": cat, "anomaly_class": "AK", "image_path": rel,
                 "mask_path": rel[:-4] + ".png"})
    test_expected.append((cat, "test", 1, mask))
  meta = {"meta": {"prefix": cat, "normal_class": "OK"}, "train": train, "test": test}
  jsons = root / "realiad_jsons" / ("realiad_jsons" if nested else "")
  jsons.mkdir(parents=True, exist_ok=True)
  (jsons / f"{cat}.json").write_text(json.dumps(meta))
  return expected + test_expected


def test_realiad_reads_its_meta_files(tmp_path):
  root = tmp_path / "Real-IAD"
  expected = _realiad(root)
  dataset = load_dataset(_config("realiad", root, "audiojack"))
  _check(dataset, expected)
  assert dataset.test_defects == ["good", "AK", "AK"]
  assert sum("_C3_" in p for p in dataset.test_paths) == 1  # views are images of the category
  nested = tmp_path / "nested"
  _realiad(nested, nested=True)  # realiad_jsons/realiad_jsons/<category>.json
  _check(load_dataset(_config("realiad", nested, "audiojack")), expected)
  meta = root / "realiad_jsons" / "audiojack.json"
  obj = json.loads(meta.read_text())
  obj["test"][1].pop("mask_path")
  meta.write_text(json.dumps(obj))
  with pytest.raises(DataLayoutError, match=r"audiojack\.json: test\[1\] must have exactly the "
                                            r"keys \['anomaly_class', 'category', 'image_path', "
                                            r"'mask_path'\]"):
    load_dataset(_config("realiad", root, "audiojack"))
  meta.write_text("[]")
  with pytest.raises(DataLayoutError, match=r"audiojack\.json must be \{\"meta\""):
    load_dataset(_config("realiad", root, "audiojack"))


@pytest.mark.parametrize("name", ["mvtec_ad2", "btad", "realiad"])
def test_tfds_builders_read_what_the_folder_readers_read(tmp_path, name):
  pytest.importorskip("tensorflow_datasets")
  root = tmp_path / name
  category = {"mvtec_ad2": "can", "btad": "01", "realiad": "audiojack"}[name]
  {"mvtec_ad2": _ad2, "btad": _btad, "realiad": _realiad}[name](root)
  direct = load_dataset(_config(name, root, category))
  config = _config(name, root, category)
  config.tfds_dir = str(tmp_path / "tfds")
  via_tfds = load_dataset(config)
  assert list((tmp_path / "tfds" / f"fmjax_{name}").glob(f"{category}_{SIZE}px/1.1.0/*.array_record*"))
  for field in ("train_images", "test_images", "test_masks", "test_labels", "test_classes",
                "val_images"):
    a, b = getattr(via_tfds, field), getattr(direct, field)
    assert (a is None) == (b is None), field
    if a is not None:
      np.testing.assert_array_equal(a, b, err_msg=field)
  assert via_tfds.test_paths == direct.test_paths and via_tfds.test_defects == direct.test_defects
  if name == "mvtec_ad2":
    assert len(via_tfds.val_images) == 2 and via_tfds.val_paths == direct.val_paths


# (tree builder, data.categories, test images) of the sets without an end-to-end test of their
# own (MVTec AD 2 and LOCO have theirs above).
TREES = {"mpdd": (_mpdd, "tubes", 3), "btad": (_btad, "01,02", 6), "ksdd2": (_ksdd2, "", 4),
         "kolektorsdd": (_kolektorsdd, "", 8), "realiad": (_realiad, "audiojack", 3)}


@pytest.mark.parametrize("name", ["mpdd", "btad", "ksdd2", "kolektorsdd", "realiad"])
def test_each_set_trains_and_evaluates_end_to_end(tmp_path, name):
  """A few training steps and an evaluation on each set's tree: metrics.json with the seven and
  AUPIMO (the AUPIMO range moved to what 16x16 test images reach); MVTec AD 2 and LOCO have
  their own tests above."""
  build, categories, num_test = TREES[name]
  build(tmp_path / name)
  c = tiny_config(**{"data.name": name, "data.root": str(tmp_path / name),
                     "data.categories": categories, "data.image_size": SIZE,
                     "data.val_fraction": 0.0, "evaluate.aupimo_fpr": "1e-2,1e-1"})
  result = fm_main.run(c, str(tmp_path / "run"), "train_and_evaluate")
  metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
  assert metrics["settings"]["num_test_images"] == num_test == result.settings.num_test_images
  for key in ("image_auroc", "pixel_auroc", "pixel_aupro", "pixel_aupimo"):
    assert 0 <= metrics[key] <= 1, key
    assert metrics[key] == getattr(result.pooled, key)


def test_score_without_a_folder_is_one_line_unless_the_set_has_server_splits(tmp_path):
  from fmjax.core.errors import ConfigError
  for name, root in (("synthetic", ""), ("btad", str(tmp_path))):
    c = tiny_config(**{"data.name": name, "data.root": root})
    with pytest.raises(ConfigError, match=r"--mode=score needs --config.data.score_dir"):
      fm_main.run(c, str(tmp_path / "run"), "score")
  _ad2(tmp_path / "ad2")
  c = tiny_config(**{"data.name": "mvtec_ad2", "data.root": str(tmp_path / "ad2"),
                     "data.categories": "can,vial", "data.val_fraction": 0.0})
  with pytest.raises(DataLayoutError, match=r"Categories \['vial'\] not found"):
    fm_main.run(c, str(tmp_path / "ad2_run"), "score")  # checked before anything is loaded
  (tmp_path / "ad2" / "can" / "test_private_mixed" / "000_mixed.png").unlink()
  (tmp_path / "ad2" / "can" / "test_private_mixed" / "001_mixed.png").unlink()
  c.data.categories = "can"
  with pytest.raises(DataLayoutError, match=r"MVTec AD 2: no images in .*can/test_private_mixed"):
    fm_main.run(c, str(tmp_path / "ad2_run"), "score")
  assert not (tmp_path / "ad2_run").exists()  # refused before anything is written
