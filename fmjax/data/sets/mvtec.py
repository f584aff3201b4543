"""MVTec AD (Bergmann et al. 2019): <root>/<category>/train/good, test/<defect>, and
ground_truth/<defect>/<stem>_mask.png; 15 categories. `samples` reads any tree in this layout
(the folder and MPDD sets use it too)."""

from fmjax.data.sets import DataSet
from fmjax.data.sources import MVTEC_CATEGORIES, mvtec_samples


def samples(root, categories, image_level_only, data_config):
  """(categories, samples) of an MVTec-layout tree (`sources.mvtec_samples`)."""
  return mvtec_samples(root, categories, image_level_only)


SET = DataSet("mvtec", "MVTec AD: train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png",
              MVTEC_CATEGORIES, samples)
