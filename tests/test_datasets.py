"""The data sets of `fmjax.data.sets`, each read from a small tree in its own layout made here
(generated images with the real file extensions and names, masks where the set has them)."""

import numpy as np
import pytest
from PIL import Image

from fmjax import configlib, main as fm_main
from fmjax.core.errors import DataLayoutError
from fmjax.data import DATASETS, load_dataset, sets
from tiny import tiny_config

SIZE = 16


def _image(path, seed, mode="RGB"):
  rng = np.random.default_rng(seed)
  path.parent.mkdir(parents=True, exist_ok=True)
  pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
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


def test_mpdd_reads_its_mvtec_layout(tmp_path):
  root = tmp_path / "MPDD"
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


def test_ksdd2_labels_by_ground_truth_and_trains_on_normals_only(tmp_path, recwarn):
  root = tmp_path / "KolektorSDD2"
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


def test_btad_trains_and_evaluates_end_to_end(tmp_path):
  _btad(tmp_path / "btad")
  c = tiny_config(**{"data.name": "btad", "data.root": str(tmp_path / "btad"),
                     "data.categories": "01,02", "data.image_size": SIZE})
  result = fm_main.run(c, str(tmp_path / "run"), "train_and_evaluate")
  assert list(result.per_category) == ["01", "02"]
  assert 0 <= result.mean.pixel_auroc <= 1 and result.settings.num_test_images == 6


def test_kolektorsdd_fixed_split_by_part_folder(tmp_path):
  root = tmp_path / "KolektorSDD"
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
  dataset = load_dataset(_config("kolektorsdd", root))
  _check(dataset, train + test)
  assert all("/kos0" in p for p in dataset.train_paths)  # kos01, kos02 only
  assert sum("kos4" in p for p in dataset.test_paths) == 6  # all of kos41 and kos42
  (root / "kos42" / "Part2_label.bmp").unlink()
  with pytest.raises(DataLayoutError, match=r"Part2\.jpg has no label"):
    load_dataset(_config("kolektorsdd", root))
