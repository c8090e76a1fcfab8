"""Serving finished runs live: `affcli stream` joins pipeline/ (decode, crop, backbones) and heads/ (causal head)."""
