"""Reward learning: a Bradley–Terry reward model r_φ(x, y) fitted to preference pairs by the paper's eq (1).

- :mod:`alignpro.reward_model.bt`       eq (1)'s loss, σ(Δ), pairwise accuracy, calibration bins (pure functions)
- :mod:`alignpro.reward_model.model`    the base network, the (x, y) template, save/load, the ``rm:DIR`` reward
- :mod:`alignpro.reward_model.train`    the loop: pairs → held-out split → eq (1) updates → checkpoints → measures
- :mod:`alignpro.reward_model.label`    preference pairs from a gold reward (π_F answers twice, r* picks)
- :mod:`alignpro.reward_model.measure`  held-out accuracy ± s.e., eq (1) loss, calibration table and figure
- :mod:`alignpro.reward_model.config`   one settings dataclass per sub-command
- :mod:`alignpro.reward_model.cli`      ``alignpro reward train | label | eval``

Preference data loaders live in :mod:`alignpro.data.preferences`.
"""
