"""Every benchmark: framework overhead, dynamic (gated) and pruned speed, the batch-1 breakdown, DDP scaling.

The one package that may import every method; method packages import no benchmark. Run them with
``python -m dynprune.bench NAME``; each prints a table whose figures go to BENCHMARKS.md.
"""
