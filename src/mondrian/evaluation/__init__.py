"""Evaluating adapters against the base model."""
