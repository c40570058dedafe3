"""Benchmarks (scripts run as `python bench/NAME.py`; see bench/README.md). A package only so that
bench/memory_throughput.py can import its parts from bench/throughput/."""
