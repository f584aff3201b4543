"""Any folder in the MVTec layout; every category with a train/ folder unless data.categories
names some."""

from fmjax.data.sets import DataSet, mvtec

SET = DataSet("folder", "any MVTec-layout folder", (), mvtec.samples)
