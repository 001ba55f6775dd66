"""Semantic segmentation: the Cityscapes reader, pixel-level evaluation and Cityscapes-standard predictions."""
