"""spcl: semantic prototype-based contrastive learning (SPCL) for domain adaptive semantic segmentation."""
__version__ = "0.1.0"
