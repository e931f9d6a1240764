"""Command-line helpers for HuLlama (model preparation and the like); importable as `scripts.*`."""
