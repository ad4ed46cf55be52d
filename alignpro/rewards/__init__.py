"""Reward models r(x, y), always scored against the ORIGINAL prompt x. See :func:`alignpro.specs.make_reward`."""
