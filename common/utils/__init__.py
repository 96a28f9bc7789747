"""Launcher utilities: instantiation helpers, rich printing, config checks, wandb mode."""
