"""The embedded procedural dataset and the MVTec-layout reader."""

import numpy as np
import pytest

from fmjax.data import load_folder_dataset, make_synthetic_dataset
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
