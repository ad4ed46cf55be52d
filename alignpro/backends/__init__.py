"""Backends: a prompter rewrites, a target answers, a reward model scores. See ``base`` for the protocols."""
