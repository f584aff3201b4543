"""VisA (Zou et al. 2022) as distributed, split by its official CSV (data.visa_split_csv,
default split_csv/1cls.csv); masks binarised (nonzero = defect); 12 categories."""

from fmjax.data.sets import DataSet
from fmjax.data.sources import VISA_CATEGORIES, visa_samples

SET = DataSet("visa", "VisA: Data/Images/{Normal,Anomaly}, Data/Masks/Anomaly, split_csv/1cls.csv",
              VISA_CATEGORIES,
              lambda root, categories, image_level_only, dc: visa_samples(
                  root, categories, dc.visa_split_csv, image_level_only))
