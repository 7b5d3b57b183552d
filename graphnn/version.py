"""The graphnn version, in a module of its own: the printers write it into program
headers without importing the package (tests/test_layering.py checks that
pyproject.toml says the same)."""
__version__ = "0.1.0"
