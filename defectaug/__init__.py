"""defectaug: synthesize realistic defects with exact pixel masks."""

__version__ = "0.1.0"
