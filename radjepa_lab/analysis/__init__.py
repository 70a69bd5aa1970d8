"""Measure what an encoder learned: embeddings, latents, attention, probes, segmentation,
retrieval, attributions, baselines and the evaluation suite.

Every function returns plain data (arrays, dataclasses); ``radjepa_lab.viz`` draws it, and
nothing here imports ``viz``, ``notebook``, ``cli`` or ``demo``. Import the submodule you need
(``from radjepa_lab.analysis import probes``); nothing heavy (umap, captum, scikit-learn) is
imported until a function needs it.

Stations, in the order a notebook meets them:
``embed`` (features, cache, UMAP/PCA) -> ``latents`` (predicted vs target) -> ``attention``
-> ``probes`` + ``metrics`` (CIs, paired tests) -> ``segmentation`` -> ``retrieval``
-> ``attribution`` -> ``baselines`` (random init, pixels, comparison) -> ``evaluation`` (the
whole suite on held-out data).
"""

__all__ = [
    "attention",
    "attribution",
    "baselines",
    "embed",
    "evaluation",
    "latents",
    "metrics",
    "probes",
    "retrieval",
    "segmentation",
]
