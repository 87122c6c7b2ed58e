"""Data layer: MURA v1.1 index, the built-in synthetic dataset, image reading, datasets and splits."""
