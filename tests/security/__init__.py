"""Security tests that walk the whole project: scoping between accounts."""
