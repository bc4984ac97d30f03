"""udl-align: unsupervised rigid alignment (in-plane rotation and shift) of noisy images."""

__version__ = "0.1.0"
