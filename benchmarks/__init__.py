"""Benchmarks of metaauto against per-task reference implementations (not part of the installed package)."""
