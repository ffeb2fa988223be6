"""r1kit: train, evaluate and serve reasoning models the DeepSeek-R1 way."""

__version__ = "0.1.0"
