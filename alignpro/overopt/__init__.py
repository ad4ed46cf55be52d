"""``alignpro overopt``: reward over-optimisation (Gao et al. 2023) of the closed form, a trained prompter and the
RLHF oracle against Bradley–Terry proxies, measured with a gold reward. See :mod:`alignpro.overopt.run`."""

from alignpro.overopt.config import OveroptConfig
from alignpro.overopt.curves import CurvePoint, closed_form_curve, summarise_curve

__all__ = ["OveroptConfig", "CurvePoint", "closed_form_curve", "summarise_curve"]
