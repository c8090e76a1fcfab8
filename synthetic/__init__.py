"""Synthetic data with known structure, one place for the demo, the tests and the benchmarks.

media: videos and audio whose picture and tone follow Aff-Wild2-style labels (the demo dataset, test clips);
features: feature tables and caches whose labels are learnable from the features; labels: ABAW label files.
Depends on cache/ and common/ only, so pipeline, heads, tests and bench can all use it.
"""
