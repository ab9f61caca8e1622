"""Droid Head training bed: teacher -> student distillation for the robot head's router and style models."""

__version__ = "0.1.0"
