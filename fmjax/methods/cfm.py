"""Conditional flow matching (the paper's training objective): `fmjax.model.flow.cfm_loss`."""

from __future__ import annotations

from fmjax.model import flow
from fmjax.methods.base import Objective

OBJECTIVE = Objective(
    name="cfm", title="Conditional flow matching",
    description="regress v(x_t, t) on x1 - x0 along straight paths from Gaussian noise to images",
    loss=flow.cfm_loss)
