"""Comparison harness: every method at matched MAC budgets, one table, one Pareto plot (python -m dynprune.compare)."""
