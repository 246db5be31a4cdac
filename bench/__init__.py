"""Benchmarks of memseg against the stores its users would otherwise pick.

Run `python -m bench --help`; see bench/README.md for what is measured and how.
"""
