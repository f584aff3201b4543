"""The embedded procedural dataset, the MVTec / VisA / folder sources, and strict bad-data handling."""

import csv
import os

import numpy as np
import pytest
from PIL import Image

from fmjax.data import (CorruptImageError, DataLayoutError, load_folder_dataset, load_visa_dataset,
                        make_synthetic_dataset, mvtec_samples)
from fmjax.data.decode import read_image, read_mask
from fmjax.data.synthetic import _texture


def test_synthetic_is_deterministic_and_shaped():
  a = make_synthetic_dataset(image_size=24, num_train=5, num_test_normal=2, num_test_anomalous=4, seed=3)
  b = make_synthetic_dataset(image_size=24, num_train=5, num_test_normal=2, num_test_anomalous=4, seed=3)
  c = make_synthetic_dataset(image_size=24, num_train=5, num_test_normal=2, num_test_anomalous=4, seed=4)
  np.testing.assert_array_equal(a.test_images, b.test_images)
  assert not np.array_equal(a.train_images, c.train_images)
  assert a.train_images.shape == (15, 24, 24, 3) and a.train_images.dtype == np.uint8
  assert a.test_masks.shape == (18, 24, 24)
  assert a.test_labels.tolist() == ([0, 0, 1, 1, 1, 1] * 3)


def test_synthetic_masks_are_exactly_the_changed_pixels():
  ds = make_synthetic_dataset(image_size=32, num_train=1, num_test_normal=3, num_test_anomalous=8, seed=1)
  normal = ds.test_labels == 0
  assert not ds.test_masks[normal].any()
  for i in np.nonzero(~normal)[0]:
    m = ds.test_masks[i].astype(bool)
    assert m.any(), ds.test_defects[i]
    # Regenerate nothing: the pixels outside the mask must look like normal texture, i.e.
    # the defect pixels differ strongly from their surroundings' colour statistics.
    inside = ds.test_images[i][m].astype(float)
    outside = ds.test_images[i][~m].astype(float)
    assert np.abs(inside.mean(0) - outside.mean(0)).max() > 10 or inside.std() > 0


def test_unknown_category_is_refused():
  with pytest.raises(ValueError, match="Unknown synthetic category"):
    _texture("marble", 8, np.random.default_rng(0))


def test_real_bottle_counts(shared_data):
  ds = load_folder_dataset(str(shared_data / "mvtec"), ["bottle"], 128)
  assert len(ds.train_images) == 209 and len(ds.test_images) == 83
  assert int((ds.test_labels == 0).sum()) == 20
  assert int(ds.test_masks.reshape(83, -1).max(1).sum()) == 63
  assert ((ds.test_masks.reshape(83, -1).max(1) > 0) == (ds.test_labels == 1)).all()
  assert sorted(set(ds.test_defects)) == ["broken_large", "broken_small", "contamination", "good"]
  # Every mask belongs to its image: same defect folder and stem, same size on disk.
  _, samples = mvtec_samples(str(shared_data / "mvtec"), ["bottle"])
  masked = [s for s in samples if s.mask]
  assert len(masked) == 63
  for s in masked:
    stem = os.path.splitext(os.path.basename(s.path))[0]
    assert s.mask.endswith(os.path.join("ground_truth", s.defect, stem + "_mask.png"))
    assert Image.open(s.mask).size == Image.open(s.path).size


def test_real_magnetic_tile_counts_and_greyscale(shared_data):
  with pytest.warns(UserWarning, match="no foreground pixel") as caught:
    ds = load_folder_dataset(str(shared_data / "mtd"), ["magnetic_tile"], 128)
  empty = [str(w.message) for w in caught if "no foreground" in str(w.message)]
  assert len(empty) == 6 and all("uneven" in m for m in empty)  # empty in the source already
  assert (len(ds.train_images), len(ds.test_images)) == (714, 630)
  assert int((ds.test_labels == 1).sum()) == 392
  assert int(ds.test_masks.reshape(630, -1).max(1).sum()) == 392 - 6
  assert ds.train_images.shape == (714, 128, 128, 3)
  # Greyscale PNGs become three equal channels.
  np.testing.assert_array_equal(ds.train_images[..., 0], ds.train_images[..., 2])


def test_fullres_bottle_resizes_to_the_shipped_copies(shared_data):
  full = shared_data / "mvtec_fullres_sample" / "bottle"
  small = shared_data / "mvtec" / "bottle"
  pairs = [(os.path.join(d, f), os.path.join(str(small), os.path.relpath(d, str(full)), f))
           for d, _, files in os.walk(full) for f in files if f.endswith(".png")]
  assert len(pairs) == 10  # 8 images + 2 masks
  for big, copy in pairs:
    if "ground_truth" in big:
      a, b = read_mask(big, 128), read_mask(copy, 128)
      assert (a == b).mean() > 0.995, big
    else:
      a, b = read_image(big, 128).astype(int), read_image(copy, 128).astype(int)
      assert np.abs(a - b).mean() < 1.0 and np.abs(a - b).max() <= 8, big


def test_native_magnetic_tiles_squashed_are_the_shipped_128_copy(shared_data):
  """configs/mtd_native.py:squashed reads mtd_native at data.resize=square: the same pixels as
  mtd (every 7th file of each folder, images and masks)."""
  native, copy = shared_data / "mtd_native" / "magnetic_tile", shared_data / "mtd" / "magnetic_tile"
  files = sorted(os.path.join(d, f) for d, _, names in os.walk(native) for f in names
                 if f.endswith((".jpg", ".png")))[::7]
  assert len(files) > 200
  for path in files:
    rel = os.path.relpath(path, native)
    twin = os.path.join(copy, os.path.splitext(rel)[0] + ".png")
    if "ground_truth" in rel:
      np.testing.assert_array_equal(read_mask(path, 128), read_mask(twin, 128), err_msg=rel)
    else:
      np.testing.assert_array_equal(read_image(path, 128, "square"), read_image(twin, 128),
                                    err_msg=rel)


def test_real_images_only_needs_the_switch(shared_data):
  with pytest.raises(FileNotFoundError, match="image_level_only"):
    load_folder_dataset(str(shared_data / "mvtec_images_only"), ["transistor"], 32)
  ds = load_folder_dataset(str(shared_data / "mvtec_images_only"), ["transistor"], 32,
                           image_level_only=True)
  assert (len(ds.train_images), len(ds.test_images)) == (213, 100) and ds.test_masks is None


def test_missing_root_and_category(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    load_folder_dataset(str(tmp_path / "nope"), ["bottle"])
  (tmp_path / "a" / "train" / "good").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match=r"not found under .*found \['a'\]"):
    load_folder_dataset(str(tmp_path), ["bottle"])
  # A bucket URL is not read directly: the message says how to make it a folder.
  with pytest.raises(FileNotFoundError, match=r"'gs://b/mvtec' is a URL, .*gcloud storage cp -r"):
    load_folder_dataset("gs://b/mvtec", ["bottle"])


# --- Small trees written by the tests ---------------------------------------------------------


def _png(path, size=(16, 16), mode="RGB", value=128, array=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if array is not None:
    Image.fromarray(array).save(path)
  else:
    Image.new(mode, size, value if mode in ("L", "I;16", "I", "P") else (value,) * len(mode)).save(path)
  return path


def _mvtec_tree(root, category="widget", n_train=3, defects=("scratch",), with_masks=True):
  for i in range(n_train):
    _png(f"{root}/{category}/train/good/{i:03d}.png", value=100 + i)
  _png(f"{root}/{category}/test/good/000.png")
  for d in defects:
    _png(f"{root}/{category}/test/{d}/000.png", value=200)
    if with_masks:
      m = np.zeros((16, 16), np.uint8)
      m[4:8, 4:8] = 255
      _png(f"{root}/{category}/ground_truth/{d}/000_mask.png", array=m)
  return str(root)


def test_fake_mvtec_tree_reads_with_labels_and_masks(tmp_path):
  root = _mvtec_tree(tmp_path, defects=("crack", "scratch"))
  ds = load_folder_dataset(root, [], 8)
  assert ds.class_names == ["widget"]
  assert ds.test_defects == ["crack", "good", "scratch"] and ds.test_labels.tolist() == [1, 0, 1]
  assert ds.test_masks.shape == (3, 8, 8) and ds.test_masks[0].sum() == 4 and not ds.test_masks[1].any()


def test_defect_without_masks_folder_and_missing_mask(tmp_path):
  root = _mvtec_tree(tmp_path, with_masks=False)
  with pytest.raises(DataLayoutError, match="'scratch' has no masks folder .*image_level_only"):
    load_folder_dataset(root, ["widget"], 8)
  os.makedirs(tmp_path / "widget" / "ground_truth" / "scratch")
  with pytest.raises(DataLayoutError, match="000.png has no mask"):
    load_folder_dataset(root, ["widget"], 8)
  ds = load_folder_dataset(root, ["widget"], 8, image_level_only=True)
  assert ds.test_masks is None and ds.test_labels.tolist() == [0, 1]


def test_empty_splits_are_refused(tmp_path):
  root = _mvtec_tree(tmp_path, n_train=0)
  os.makedirs(tmp_path / "widget" / "train" / "good")
  with pytest.raises(DataLayoutError, match="training split is empty"):
    load_folder_dataset(root, ["widget"], 8)
  os.makedirs(tmp_path / "other" / "train" / "good")
  _png(str(tmp_path / "other" / "train" / "good" / "a.png"))
  os.makedirs(tmp_path / "other" / "test" / "good")
  with pytest.raises(DataLayoutError, match="'other': the test split is empty"):
    load_folder_dataset(root, ["other"], 8)


def test_corrupt_images_name_the_file_or_are_skipped_with_a_count(tmp_path):
  root = _mvtec_tree(tmp_path, n_train=4)
  bad = tmp_path / "widget" / "train" / "good" / "001.png"
  bad.write_bytes(bad.read_bytes()[:40])  # truncated
  (tmp_path / "widget" / "train" / "good" / "002.png").write_bytes(b"not an image at all")
  with pytest.raises(CorruptImageError, match=r"2 of 6 files cannot be decoded:\n.*001.png") as e:
    load_folder_dataset(root, ["widget"], 8)
  assert "002.png" in str(e.value) and "skip_corrupt=True" in str(e.value)
  with pytest.warns(UserWarning, match="Skipped 2 undecodable files"):
    ds = load_folder_dataset(root, ["widget"], 8, skip_corrupt=True)
  assert len(ds.train_images) == 2 and not any("001" in p or "002" in p for p in ds.train_paths)


def _png_claiming(path, width: int, height: int) -> None:
  """A PNG whose header says width x height over a few bytes of image data: openable, not
  decodable, and small however large it claims to be."""
  import struct
  import zlib
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data
                              + struct.pack(">I", zlib.crc32(kind + data)))
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_a_file_above_the_readers_limit_is_refused_from_its_header(tmp_path, monkeypatch):
  from fmjax.data import decode
  huge = str(tmp_path / "huge.png")
  _png_claiming(huge, 20000, 20000)
  assert Image.open(huge).size == (20000, 20000)  # the header is readable
  with pytest.raises(CorruptImageError, match=r"huge.png: 20000x20000 = 400.0 megapixels is above "
                                              r"the reader's limit of 200 megapixels"):
    decode.read_image_and_size(huge, 32, "native")
  # The limit is the file's pixels, checked before decoding: a real 40x30 image under a
  # 1000-pixel limit is refused the same way, and read at 1200.
  small = str(tmp_path / "small.png")
  _png(small, array=np.full((30, 40, 3), 7, np.uint8))
  monkeypatch.setattr(decode, "MAX_FILE_PIXELS", 1000)
  with pytest.raises(CorruptImageError, match=r"40x30 = 0.0 megapixels"):
    decode.read_image_and_size(small, 32, "native")
  monkeypatch.setattr(decode, "MAX_FILE_PIXELS", 1200)
  image, size = decode.read_image_and_size(small, 32, "native")
  assert size == (40, 30) and image.shape == (30, 40, 3) and int(image.max()) == 7


def test_mask_of_another_size_is_resized_with_a_warning(tmp_path):
  root = _mvtec_tree(tmp_path)
  m = np.zeros((32, 32), np.uint8)
  m[8:16, 8:16] = 255  # the same region as the 16x16 mask, at twice the size
  _png(str(tmp_path / "widget" / "ground_truth" / "scratch" / "000_mask.png"), array=m)
  with pytest.warns(UserWarning, match="is 32x32 but its image is 16x16"):
    ds = load_folder_dataset(root, ["widget"], 16)
  assert ds.test_masks[1].sum() == 16 and ds.test_masks[1][4:8, 4:8].all()


def test_mixed_sizes_and_modes_become_rgb_at_the_configured_size(tmp_path):
  d = tmp_path / "widget" / "train" / "good"
  _png(str(d / "a_grey.png"), (20, 12), "L", 60)
  _png(str(d / "b_rgba.png"), (16, 16), "RGBA", 90)
  _png(str(d / "c_rgb.jpg"), (40, 40), "RGB", 120)
  _png(str(d / "d_16bit.png"), array=np.full((16, 16), 65535 // 2, np.uint16))
  pal = Image.new("P", (16, 16), 3)
  pal.putpalette([0, 0, 0, 10, 20, 30, 40, 50, 60, 70, 80, 90] + [0] * 756)
  pal.save(str(d / "e_palette.png"))
  _png(str(tmp_path / "widget" / "test" / "good" / "t.png"))
  ds = load_folder_dataset(str(tmp_path), ["widget"], 8)
  assert ds.train_images.shape == (5, 8, 8, 3) and ds.train_images.dtype == np.uint8
  means = ds.train_images.reshape(5, -1, 3).mean(1)
  np.testing.assert_allclose(means[0], [60, 60, 60], atol=0.5)
  np.testing.assert_allclose(means[1], [90, 90, 90], atol=0.5)  # alpha dropped
  np.testing.assert_allclose(means[2], [120, 120, 120], atol=2)  # JPEG
  np.testing.assert_allclose(means[3], [127.5, 127.5, 127.5], atol=0.6)  # 16-bit full range -> 8 bits
  np.testing.assert_allclose(means[4], [70, 80, 90], atol=0.5)  # palette index 3


def _visa_tree(root, objects=("pcb1", "candle")):
  rows = []
  for obj in objects:
    for i in range(3):
      rel = f"{obj}/Data/Images/Normal/{i:04d}.JPG"
      _png(os.path.join(root, rel), value=90 + i)
      rows.append([obj, "train", "normal", rel, ""])
    rel = f"{obj}/Data/Images/Normal/0003.JPG"
    _png(os.path.join(root, rel))
    rows.append([obj, "test", "normal", rel, ""])
    for i in range(2):
      rel = f"{obj}/Data/Images/Anomaly/{i:03d}.JPG"
      mrel = f"{obj}/Data/Masks/Anomaly/{i:03d}.png"
      _png(os.path.join(root, rel), value=200)
      m = np.zeros((16, 16), np.uint8)
      m[2:6, 2:5] = 1 + i  # VisA masks are small integers, not 0/255
      _png(os.path.join(root, mrel), array=m)
      rows.append([obj, "test", "anomaly", rel, mrel])
  os.makedirs(os.path.join(root, "split_csv"), exist_ok=True)
  with open(os.path.join(root, "split_csv", "1cls.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["object", "split", "label", "image", "mask"])
    w.writerows(rows)
  return str(root)


def test_fake_visa_tree_with_split_csv_and_non_binary_masks(tmp_path):
  root = _visa_tree(tmp_path)
  ds = load_visa_dataset(root, [], 16)
  assert ds.class_names == ["candle", "pcb1"] and ds.name == "visa"
  assert len(ds.train_images) == 6 and len(ds.test_images) == 6
  assert ds.test_labels.tolist() == [1, 1, 0, 1, 1, 0]  # per category, sorted by path
  assert ds.test_defects.count("anomaly") == 4
  assert ds.test_masks.dtype == np.uint8 and set(np.unique(ds.test_masks)) == {0, 1}
  assert [int(m.sum()) for m in ds.test_masks] == [12, 12, 0, 12, 12, 0]  # the 4x3 regions
  one = load_visa_dataset(root, ["pcb1"], 8)
  assert one.class_names == ["pcb1"] and len(one.test_images) == 3


def test_visa_layout_errors(tmp_path):
  with pytest.raises(DataLayoutError, match="split file .*1cls.csv not found"):
    load_visa_dataset(str(tmp_path), [], 8)
  root = _visa_tree(tmp_path)
  with pytest.raises(DataLayoutError, match=r"Categories \['fryum'\] not found .*found \['candle', 'pcb1'\]"):
    load_visa_dataset(root, ["fryum"], 8)
  os.remove(tmp_path / "pcb1" / "Data" / "Masks" / "Anomaly" / "001.png")
  with pytest.raises(DataLayoutError, match="Mask .*001.png of pcb1/Data/Images/Anomaly/001.JPG does not exist"):
    load_visa_dataset(root, ["pcb1"], 8)


def test_file_stream_equals_memory_stream(tmp_path):
  from fmjax.data import pipeline
  root = _mvtec_tree(tmp_path, n_train=5)
  ds = load_folder_dataset(root, ["widget"], 8)
  labels = np.arange(5, dtype=np.int32)
  files = pipeline.train_dataset(pipeline.ImageFileSource(ds.train_paths, labels, 8), 2, seed=7)
  memory = pipeline.train_dataset(pipeline.ArraySource(ds.train_images, labels), 2, seed=7)
  for step in range(6):
    np.testing.assert_array_equal(files[step]["image"], memory[step]["image"])
    np.testing.assert_array_equal(files[step]["label"], memory[step]["label"])


def test_visa_config_reads_a_visa_tree(tmp_path):
  from fmjax.configlib import validate
  from fmjax.data import categories_of, load_dataset
  import importlib.util
  spec = importlib.util.spec_from_file_location("visa_config", os.path.join(
      os.path.dirname(__file__), "..", "configs", "visa.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  assert len(categories_of(config.data)) == 12
  config.data.root = _visa_tree(tmp_path)
  config.data.categories = "pcb1,candle"
  config.data.image_size = 32
  validate(config)
  ds = load_dataset(config.data)
  assert ds.class_names == ["pcb1", "candle"] and ds.num_classes == 2


def _tfds_config(name, root, tfds_dir, categories, size):
  from fmjax.configlib import base_config
  c = base_config()
  c.data.name, c.data.root, c.data.tfds_dir = name, root, str(tfds_dir)
  c.data.categories, c.data.image_size = categories, size
  c.data.val_fraction = 0.0  # the readers are compared, every training image included
  return c


def test_tfds_builder_matches_the_folder_reader(shared_data, tmp_path):
  pytest.importorskip("tensorflow_datasets")
  from fmjax.data import load_dataset
  config = _tfds_config("mvtec", str(shared_data / "mvtec"), tmp_path / "tfds", "bottle", 32)
  via_tfds = load_dataset(config.data)
  assert list((tmp_path / "tfds" / "fmjax_mvtec" / "bottle_32px" / "1.1.0").glob("*.array_record*"))
  direct = load_folder_dataset(str(shared_data / "mvtec"), ["bottle"], 32)
  for field in ("train_images", "test_images", "test_masks", "test_labels", "test_classes"):
    np.testing.assert_array_equal(getattr(via_tfds, field), getattr(direct, field), err_msg=field)
  assert via_tfds.test_paths == direct.test_paths and via_tfds.test_defects == direct.test_defects
  again = load_dataset(config.data)  # prepared once: read back, not rebuilt
  np.testing.assert_array_equal(again.train_images, direct.train_images)


def test_tfds_builder_on_a_fake_visa_tree(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  from fmjax.data import load_dataset
  root = _visa_tree(tmp_path / "visa")
  via_tfds = load_dataset(_tfds_config("visa", root, tmp_path / "tfds", "pcb1,candle", 16).data)
  direct = load_visa_dataset(root, ["pcb1", "candle"], 16)
  assert via_tfds.class_names == ["pcb1", "candle"]
  np.testing.assert_array_equal(via_tfds.test_masks, direct.test_masks)
  np.testing.assert_array_equal(via_tfds.train_classes, direct.train_classes)
  assert via_tfds.test_paths == direct.test_paths


def test_folder_config_reads_every_category_of_a_tree(tmp_path):
  import importlib.util
  from fmjax.data import load_dataset
  _mvtec_tree(tmp_path, "alpha")
  _mvtec_tree(tmp_path, "beta", defects=("dent", "scratch"))
  spec = importlib.util.spec_from_file_location("folder_config", os.path.join(
      os.path.dirname(__file__), "..", "configs", "folder.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.data.root, config.data.image_size = str(tmp_path), 8
  ds = load_dataset(config.data)
  assert ds.class_names == ["alpha", "beta"] and ds.test_classes.tolist() == [0, 0, 1, 1, 1]
  assert ds.test_defects == ["good", "scratch", "dent", "good", "scratch"]
