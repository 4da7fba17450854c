"""Benchmarks of the gateway (not tests); `make bench` runs the campaign benchmark."""
