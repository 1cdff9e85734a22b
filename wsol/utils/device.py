"""Device selection from a user string."""

from __future__ import annotations

import torch

from wsol.errors import UserError


def resolve_device(name: str, what: str = "device") -> torch.device:
    """``auto`` -> CUDA if available else CPU; otherwise ``torch.device(name)``, with a clear
    error (naming ``what``) for a malformed name or CUDA on a machine without it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"{what} {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{what} {name}: CUDA is not available on this machine")
    return device
