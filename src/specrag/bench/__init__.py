"""Benchmark data and metrics for measuring what prompt compression keeps."""
