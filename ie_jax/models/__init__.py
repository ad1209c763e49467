"""Flax models: the ResNet backbone and the MoCo v3 heads."""
