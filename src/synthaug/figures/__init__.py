"""Plots of the report and the analyses (matplotlib only here)."""
