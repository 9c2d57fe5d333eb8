"""rnnbench: compare recurrent cell variants fairly and reproducibly."""

__version__ = "0.1.0"
