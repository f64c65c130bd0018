"""Training and evaluation with Lightning (progress bars, schedules, logs)."""
