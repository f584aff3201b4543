"""MVTec AD (Bergmann et al. 2019): <root>/<category>/train/good, test/<defect>, and
ground_truth/<defect>/<stem>_mask.png; 15 categories."""

from fmjax.data.sets import DataSet
from fmjax.data.sources import MVTEC_CATEGORIES, mvtec_samples

SET = DataSet("mvtec", "MVTec AD: train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png",
              MVTEC_CATEGORIES,
              lambda root, categories, image_level_only, dc: mvtec_samples(root, categories,
                                                                           image_level_only))
