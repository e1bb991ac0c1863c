"""tfprune: all packaging metadata lives in setup.cfg."""
import setuptools

setuptools.setup()
