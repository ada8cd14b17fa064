"""Compressed sparse layers: only the active values and their positions are stored."""
