"""Tests of the si command line and its hub client."""
