"""Choosing the method to localize with from a loaded checkpoint's method."""

from __future__ import annotations

from wsol.errors import UserError
from wsol.methods.base import WSOLMethod

__all__ = ["resolve_method"]


def resolve_method(method: WSOLMethod, requested: str | None,
                   checkpoint: str = "the checkpoint") -> WSOLMethod:
    """The method to localize with: the checkpoint's own by default; ``cream`` from any method
    trained or fitted with CREAM (its ``fused`` stage unless the checkpoint chose another);
    ``cam`` from CREAM on CAM (CREAM's backbone is a trained CAM); anything else is a clear
    error."""
    if requested is None or requested == method.name:
        return method
    if requested == "cream" and getattr(method, "with_cream", False):
        return method
    if requested == "cam" and method.name == "cream":
        from wsol.methods import build_method

        cam = build_method("cam", method.backbone)
        return cam.train(method.training)
    if requested == "cream":
        raise UserError(
            f"{checkpoint} holds a {method.name!r} model without CREAM: CREAM needs context "
            f"embeddings fitted on the training images; run `wsol cream fit --checkpoint "
            f"{checkpoint} --out CREAM.pt` first and localize with CREAM.pt, or use "
            "--method cream_free (training-free CREAM, no embeddings needed)")
    raise UserError(f"{checkpoint} holds a {method.name!r} model; --method {requested} is not "
                     f"available from it (only 'cam' can be taken from a 'cream' checkpoint)")
