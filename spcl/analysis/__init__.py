"""Analyses of docs/method.md "Analyses" on a trained checkpoint: Class Center Distance (ccd.py), a class-balanced
feature sample and its t-SNE / projector export (embedding.py), qualitative panels (panels.py), from
streamed per-pixel encoder features of both domains (features.py); figures in plots.py.

matplotlib and scikit-learn (the `analysis` extra) are imported only where a figure or a t-SNE is
made. The command-line entry point is tools/analyze.py.
"""
from .ccd import CCD_SETS, class_center_distance, ccd_of, domain_ccd, format_ccd_table
from .deps import INSTALL_HINT, MissingDependencyError, require
from .embedding import ClassBalancedPixelSample, embed_2d, export_projector
from .features import (DOMAINS, FeatureStats, analysis_dataset, analysis_loader, collect_feature_stats,
                       iter_pixel_features, normalize_features, select_images)
from .panels import make_panel_grid, panel_grid_size, panel_inputs, predict_labels

__all__ = ["CCD_SETS", "class_center_distance", "ccd_of", "domain_ccd", "format_ccd_table", "INSTALL_HINT",
           "MissingDependencyError", "require", "ClassBalancedPixelSample", "embed_2d", "export_projector",
           "DOMAINS", "FeatureStats", "analysis_dataset", "analysis_loader", "collect_feature_stats",
           "iter_pixel_features", "normalize_features", "select_images", "make_panel_grid", "panel_grid_size",
           "panel_inputs", "predict_labels"]
