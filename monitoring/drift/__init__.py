"""Drift statistics on arrays in memory: numeric (KS, Wasserstein, PSI), categorical (chi-square, PSI), corrections."""
