"""Benchmarks: the original in-process PyTorch approach vs this stack, side by side."""
