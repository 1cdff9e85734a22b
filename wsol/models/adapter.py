"""Any CAM-shaped classifier as a wsol backbone: :class:`ClassifierAdapter`.

CAM (and everything built on it: CREAM, training-free CREAM, the evaluator) needs a classifier
of the form *feature map -> global average pooling -> one linear layer* (method-spec §1). Most
classifiers people already have are exactly that, written in one of two layouts:

- **timm style**: ``model.forward_features(x) -> (B, D, h, w)`` and
  ``model.get_classifier() -> nn.Linear(D, C)`` (ResNets, EfficientNets, ConvNeXts, ...);
- **torchvision style**: a trunk (a ``features`` module, as in EfficientNet/MobileNet/DenseNet,
  or the child modules registered before the pooling, as in ResNet's ``conv1 ... layer4``),
  then ``nn.AdaptiveAvgPool2d``, then a head ``fc`` or ``classifier`` that is an ``nn.Linear``
  or an ``nn.Sequential`` of dropout/flatten layers ending in one ``nn.Linear``.

The adapter finds these by name (or takes them from ``features=`` / ``head=``), so that

    F = trunk(x)                           (B, D, h, w)
    logits = head(mean_{h,w} F)            Eq.2
    M_c = sum_k w^c_k F_k                  Eq.1 (the head's weight row c)

exactly as for wsol's own backbones. A model with no such structure (no linear head, a head
that is an MLP, token features) raises a :class:`TypeError` naming what is missing. The model's
modules are shared, not copied: the adapter moves and trains with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from wsol.models.base import WSOLBackbone

__all__ = ["ClassifierAdapter", "as_backbone"]

#: Modules between the trunk and the head that the adapter skips (its own GAP replaces them).
_POOL_TYPES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Dropout,
               nn.Identity)
#: Modules a torchvision-style head may contain besides its one ``nn.Linear``.
_HEAD_EXTRAS = (nn.Dropout, nn.Flatten, nn.Identity)


def _get(model: nn.Module, name: str, what: str) -> Any:
    obj: Any = model
    for part in name.split("."):
        if not hasattr(obj, part):
            raise TypeError(f"{type(model).__name__} has no {what} {name!r} (no attribute "
                            f"{part!r})")
        obj = getattr(obj, part)
    return obj


def _linear_of(head: Any, where: str) -> nn.Linear:
    """The one ``nn.Linear`` of a head: the head itself, or a Sequential of dropout/flatten
    layers around exactly one Linear."""
    if isinstance(head, nn.Linear):
        return head
    if isinstance(head, nn.Sequential):
        linears = [m for m in head if isinstance(m, nn.Linear)]
        others = [m for m in head if not isinstance(m, (nn.Linear, *_HEAD_EXTRAS))]
        if len(linears) == 1 and not others:
            return linears[0]
        if len(linears) > 1:
            raise TypeError(f"{where} has {len(linears)} Linear layers (an MLP head): CAM needs "
                            "a single linear layer after global average pooling")
        if others:
            raise TypeError(f"{where} contains {type(others[0]).__name__}, not only dropout/"
                            "flatten around one nn.Linear: CAM needs a linear head after "
                            "global average pooling")
    raise TypeError(f"{where} is a {type(head).__name__}, not an nn.Linear (or a Sequential "
                    "ending in one): CAM needs a linear head after global average pooling")


class ClassifierAdapter(WSOLBackbone):
    """A torchvision- or timm-style classifier seen through the wsol backbone contract.

    Args:
        model: the classifier (kept by reference: its parameters are the adapter's).
        features: what produces the feature map ``F``: ``None`` (auto: ``forward_features`` if
            the model has one, else a ``features`` submodule, else the child modules registered
            before the head, skipping pooling/flatten/dropout), the dotted name of a submodule
            or method of ``model``, a sequence of child names run in order, or a callable
            ``x -> F``.
        head: dotted name of the linear head (auto: ``get_classifier()``, then ``fc``, then
            ``classifier``, then ``head``); an ``nn.Linear`` or a Sequential holding one.
        mean, std: per-channel input normalization of images in [0, 1]; default the model's
            ``pretrained_cfg``/``default_cfg`` (timm) if it has one, else ImageNet's.

    Raises:
        TypeError: naming what is missing when ``model`` has no linear head or no way to
            produce a feature map.

    ``stream_safe`` is False: wsol cannot know whether someone else's forward pass keeps state
    on its modules, so its batches run as one call (set ``adapter.stream_safe = True`` for a
    model known to be stateless, to run CPU inference in streams, :mod:`wsol.utils.streams`).
    """

    stream_safe = False

    def __init__(self, model: nn.Module, *, features: str | Sequence[str] | Callable | None = None,
                 head: str | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"ClassifierAdapter needs an nn.Module, got {type(model).__name__}")
        self.model = model
        self._head_name, linear = self._find_head(model, head)
        self._linear = [linear]  # a list: not registered twice (it is inside ``model``)
        self._trunk_names: list[str] | None = None
        self._trunk_fn: Callable[[Tensor], Tensor] | None = None
        self._trunk_desc = self._find_trunk(model, features)
        self.num_classes = int(linear.out_features)
        self.feature_dim = int(linear.in_features)
        cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
        if mean is None and isinstance(cfg, dict) and len(cfg.get("mean", ())) == 3:
            mean = cfg["mean"]
        if std is None and isinstance(cfg, dict) and len(cfg.get("std", ())) == 3:
            std = cfg["std"]
        if mean is not None:
            self.input_mean = tuple(float(v) for v in mean)  # type: ignore[assignment]
        if std is not None:
            self.input_std = tuple(float(v) for v in std)  # type: ignore[assignment]

    # ---------------------------------------------------------------- discovery
    @staticmethod
    def _find_head(model: nn.Module, head: str | None) -> tuple[str, nn.Linear]:
        name = type(model).__name__
        if head is not None:
            return head, _linear_of(_get(model, head, "head"), f"{name}.{head}")
        if callable(getattr(model, "get_classifier", None)):
            return "get_classifier()", _linear_of(model.get_classifier(),
                                                  f"{name}.get_classifier()")
        for attr in ("fc", "classifier", "head"):
            if isinstance(getattr(model, attr, None), nn.Module):
                return attr, _linear_of(getattr(model, attr), f"{name}.{attr}")
        raise TypeError(f"{name} is not a classifier wsol can adapt: it has no get_classifier()"
                        " and no 'fc', 'classifier' or 'head' module; pass head='<name of its "
                        "final nn.Linear>'")

    def _find_trunk(self, model: nn.Module, features: Any) -> str:
        name = type(model).__name__
        if callable(features) and not isinstance(features, str):
            self._trunk_fn = features
            return getattr(features, "__name__", type(features).__name__)
        if isinstance(features, str):
            target = _get(model, features, "feature module")
            if not callable(target):
                raise TypeError(f"{name}.{features} is not callable")
            self._trunk_fn = target
            return features
        if features is not None:
            names = [str(n) for n in features]
            for n in names:
                if not isinstance(getattr(model, n, None), nn.Module):
                    raise TypeError(f"{name} has no child module {n!r} (features=...)")
            self._trunk_names = names
            return " -> ".join(names)
        if callable(getattr(model, "forward_features", None)):
            self._trunk_fn = model.forward_features
            return "forward_features"
        if isinstance(getattr(model, "features", None), nn.Module):
            self._trunk_fn = model.features
            return "features"
        head_module = self._linear[0]
        children = list(model.named_children())
        head_index = next((i for i, (n, m) in enumerate(children)
                           if n == self._head_name or m is head_module), None)
        if head_index is None:
            raise TypeError(f"{name} has no forward_features, no 'features' module and its head "
                            f"{self._head_name!r} is not a direct child: pass features=...")
        names = [n for n, m in children[:head_index] if not isinstance(m, _POOL_TYPES)]
        if not names:
            raise TypeError(f"{name} has no modules before its head {self._head_name!r} to "
                            "compute a feature map with: pass features=...")
        self._trunk_names = names
        return " -> ".join(names)

    # ---------------------------------------------------------------- the contract
    @property
    def classifier(self) -> nn.Linear:  # type: ignore[override]
        return self._linear[0]

    def forward_features(self, x: Tensor) -> Tensor:
        if self._trunk_fn is not None:
            features = self._trunk_fn(x)
        else:
            features = x
            for n in self._trunk_names or ():
                features = getattr(self.model, n)(features)
        if not isinstance(features, Tensor) or features.ndim != 4:
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features)
            raise TypeError(f"{type(self.model).__name__}: the features ({self._trunk_desc}) are "
                            f"{shape}, not a (B, D, h, w) feature map: CAM needs a convolutional "
                            "feature map (token outputs of a transformer are not one)")
        if features.shape[1] != self.feature_dim:
            raise TypeError(f"{type(self.model).__name__}: the features ({self._trunk_desc}) have "
                            f"{features.shape[1]} channels but the head {self._head_name!r} "
                            f"takes {self.feature_dim} inputs: pass features=... naming the "
                            "module right before the global pooling")
        return features

    def new_modules(self) -> list[nn.Module]:
        return [self.classifier]

    def stages(self) -> list[nn.Module]:
        """The trunk's child modules (torchvision style), else the whole model as one stage."""
        if self._trunk_names:
            return [getattr(self.model, n) for n in self._trunk_names]
        return [self.model]

    def extra_repr(self) -> str:
        return (f"features={self._trunk_desc!r}, head={self._head_name!r}, "
                f"classes={self.num_classes}, feature_dim={self.feature_dim}")


def as_backbone(model: nn.Module, **kwargs: Any) -> WSOLBackbone:
    """``model`` itself if it is a wsol backbone, else a :class:`ClassifierAdapter` of it."""
    if isinstance(model, WSOLBackbone):
        return model
    return ClassifierAdapter(model, **kwargs)
