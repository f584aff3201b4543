"""MPDD, the Metal Parts Defect Detection data set (Jezek et al., ICUMT 2021): the MVTec layout
(<category>/train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png), 6 categories."""

from fmjax.data.sets import DataSet
from fmjax.data.sources import mvtec_samples

CATEGORIES = ("bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate",
              "tubes")

SET = DataSet("mpdd", "MPDD: the MVTec layout, 6 categories of metal parts", CATEGORIES,
              lambda root, categories, image_level_only, dc: mvtec_samples(root, categories,
                                                                           image_level_only))
