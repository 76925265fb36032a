"""Benchmarks of kmock (``kmock bench ...``)."""
