"""Backends: a prompter rewrites, a target answers, a reward model scores. See ``base`` for the protocols and
``registry`` for the model kinds (which class serves each, and what it can do)."""
