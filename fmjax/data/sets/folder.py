"""Any folder in the MVTec layout; every category with a train/ folder unless data.categories
names some."""

from fmjax.data.sets import DataSet
from fmjax.data.sources import mvtec_samples

SET = DataSet("folder", "any MVTec-layout folder", (),
              lambda root, categories, image_level_only, dc: mvtec_samples(root, categories,
                                                                           image_level_only))
