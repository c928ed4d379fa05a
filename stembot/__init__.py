"""stembot: split audio into stems from Discord with the Soundverse Stem Separation API."""

__version__ = "0.1.0"
