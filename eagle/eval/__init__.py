"""Evaluation: the speed benchmark (`eagle bench`, eagle.eval.bench) and the tutorial's quick check."""

from eagle.eval.speed import benchmark_speed

__all__ = ["benchmark_speed"]
