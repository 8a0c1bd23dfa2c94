"""Helpers shared by the test suites: data factories and strategies, no fakes."""
