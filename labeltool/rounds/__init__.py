"""Rounds: the pure round step (:mod:`labeltool.rounds.step`), the newest round's state, its model, self-training."""
