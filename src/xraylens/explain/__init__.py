"""Heatmaps, boxes and sentences, and the scores that measure them."""
