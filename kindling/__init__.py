"""Kindling: run AWS Lambda functions, unmodified, on your own machines."""

__version__ = "0.1.0"
