"""Evaluation for HuLlama: metrics kept in the repository as `evaluate` modules, loaded by path."""
