"""bertmini: BERT built piece by piece, for the book of the same name."""

__version__ = "0.1.0"
