"""MPDD, the Metal Parts Defect Detection data set (Jezek et al., ICUMT 2021): the MVTec layout
(<category>/train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png), 6 categories."""

from fmjax.data.sets import DataSet, mvtec

CATEGORIES = ("bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate",
              "tubes")

SET = DataSet("mpdd", "MPDD: the MVTec layout, 6 categories of metal parts", CATEGORIES,
              mvtec.samples)
