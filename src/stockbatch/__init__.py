"""stockbatch: raw daily stock prices in, a trustworthy quarterly ML feature table out."""

__version__ = "0.1.0"
