"""Figures from arrays and analysis results (matplotlib, no pyplot state) and notebook widgets.

``viz`` only draws; everything it shows is computed by ``radjepa_lab.analysis``.
"""

from radjepa_lab.viz.images import (
    new_figure,
    overlay,
    plot_attention_heads,
    plot_attributions,
    plot_coverage,
    plot_dicom_steps,
    plot_images,
    plot_intensity_histograms,
    plot_latents,
    plot_maps_side_by_side,
    plot_mask_overlay,
    plot_nn_crops,
    plot_overlay,
    plot_phantom,
    plot_rollout,
    plot_sampled_masks,
    plot_segmentation,
    show_xray,
)
from radjepa_lab.viz.plots import (
    plot_embedding,
    plot_embeddings_side_by_side,
    plot_pr_curves,
    plot_probe_bars,
    plot_ratio_histograms,
    plot_retrieval_table,
    plot_run_curves,
    plot_training_curves,
)

__all__ = [
    "new_figure",
    "plot_dicom_steps",
    "plot_intensity_histograms",
    "plot_phantom",
    "overlay",
    "plot_attention_heads",
    "plot_attributions",
    "plot_coverage",
    "plot_embedding",
    "plot_embeddings_side_by_side",
    "plot_images",
    "plot_latents",
    "plot_maps_side_by_side",
    "plot_mask_overlay",
    "plot_nn_crops",
    "plot_overlay",
    "plot_pr_curves",
    "plot_probe_bars",
    "plot_ratio_histograms",
    "plot_retrieval_table",
    "plot_rollout",
    "plot_run_curves",
    "plot_sampled_masks",
    "plot_segmentation",
    "plot_training_curves",
    "show_xray",
]
