"""Benchmarks: speed (step time, throughput, memory) and time to quality."""
