"""Dagster assets and their checks, one module per stage."""
