"""wsol: weakly supervised object localization (CAM, CREAM, B-CAM) and the wsolevaluation protocol."""

__version__ = "0.1.0"

__all__ = ["__version__"]
