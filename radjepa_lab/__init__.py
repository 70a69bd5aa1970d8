"""RadJEPA Lab: a notebook-first kit for learning how I-JEPA learns chest X-rays."""

from radjepa_lab.errors import RadJEPALabError

__version__ = "0.1.0"
__all__ = ["RadJEPALabError", "__version__"]
