"""Distributed linear models: kernels, objective and solvers."""
