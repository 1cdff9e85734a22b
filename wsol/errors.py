"""The errors wsol raises for bad input, one hierarchy for the whole package.

Every error caused by something outside wsol's code (a config value, a metadata line, a file,
a checkpoint, a score map, an image, a command-line argument) is a :class:`WsolError`; its
message names the key, file or line at fault. The command line prints exactly these (and
``OSError``) as one line and exits 2; any other exception is a bug and keeps its traceback.

The subclasses also derive from ``ValueError`` so that library callers that catch
``ValueError`` keep working.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "ImageLoadError",
    "MetadataError",
    "MetricError",
    "PrepareError",
    "PretrainedWeightsError",
    "RunDirError",
    "ScoreMapError",
    "UserError",
    "WsolError",
]


class WsolError(Exception):
    """Base of every input error wsol raises on purpose."""


class UserError(WsolError, ValueError):
    """A bad command-line argument or combination of arguments."""


class ConfigError(WsolError, ValueError):
    """A bad configuration value; the message names the key (and file)."""


class MetadataError(WsolError, ValueError):
    """A malformed wsolevaluation metadata file; the message names the file and line."""


class CheckpointError(WsolError, ValueError):
    """The file is not a usable wsol checkpoint; the message names it."""


class ScoreMapError(WsolError, ValueError):
    """A score map that is not a finite 2-D float map in [0, 1] of the expected size."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class ImageLoadError(WsolError, ValueError):
    """An image file that cannot be decoded (or is too large); the message names it."""


class MetricError(WsolError, ValueError):
    """A metric that is undefined for the data given (e.g. PxAP without positive pixels)."""


class PrepareError(WsolError, ValueError):
    """A dataset that cannot be converted to the wsolevaluation layout."""


class PretrainedWeightsError(WsolError, ValueError):
    """Pretrained weights that are missing or do not fit the model."""


class RunDirError(WsolError, ValueError):
    """A run directory that is missing, foreign to wsol, locked or inconsistent."""
