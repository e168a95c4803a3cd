"""Version of the gdmix package."""

__version__ = "0.1.0"
