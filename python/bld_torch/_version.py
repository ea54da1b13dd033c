"""The version of the bld_torch package: the one place it is written (python/setup.py reads it;
tests/python/test_bld_torch.py checks it against the project version in CMakeLists.txt)."""

__version__ = "0.1.0"
