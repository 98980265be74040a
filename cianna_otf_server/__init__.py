"""CIANNA On-The-Fly: deep-learning source detection on FITS images, served on demand."""

__version__ = "0.1.0"
