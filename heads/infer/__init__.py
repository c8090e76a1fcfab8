"""Inference and scoring: whole-video outputs, post-processing, predict/evaluate, online (stream), score files."""
