"""The Model Doctor method: hooks, channel statistics (diagnosis) and constraints (treatment)."""
