"""Benchmarks: our runtime against the diffusers/PyTorch baseline on the same weights, in one run."""
