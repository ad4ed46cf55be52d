"""Training of the prompter ρ (Align-Pro, eq 9) and of the RLHF oracle (eq 2): one loop, three estimators.

- :mod:`alignpro.train.config`     TrainConfig, the settings of ``alignpro train``
- :mod:`alignpro.train.loop`       the loop: rollout → reward → log-probs → KL, advantages → update → log → checkpoint
- :mod:`alignpro.train.advantages` gae / rloo / grpo and the :class:`Algo` enum mapping to them
- :mod:`alignpro.train.kl`         k1 / k2 / k3 estimators, fixed and adaptive KL controllers
- :mod:`alignpro.train.losses`     log-probs, masked statistics, clipped policy and value losses
- :mod:`alignpro.train.policy`     policy + value head, reference, sampling, export of ``RUN/final``
- :mod:`alignpro.train.roles`      prompter (eq 9) and oracle (eq 2): queries and rewards
- :mod:`alignpro.train.checkpoint` atomic checkpoints and crash-safe JSONL logs

Importing this package imports neither transformers nor accelerate.
"""
