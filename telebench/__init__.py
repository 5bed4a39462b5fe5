"""telebench: measure whether symmetry teleportation makes training faster or better."""

__version__ = "0.1.0"
