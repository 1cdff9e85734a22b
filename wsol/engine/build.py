"""Build a method (backbone + WSOL method) from a resolved config (see :mod:`wsol.config`)."""

from __future__ import annotations

from wsol.config import ConfigError, method_kwargs, model_kwargs
from wsol.methods import WSOLMethod, build_method
from wsol.models import create_model


def build_from_config(config: dict, num_classes: int, pretrained: bool | str | None = None) -> WSOLMethod:
    """Backbone ``config["model"]`` wrapped in method ``config["method"]``.

    ``pretrained=None`` uses ``config["model"]["pretrained"]``; pass ``False`` when a checkpoint
    will overwrite the weights anyway.
    """
    model_cfg = config["model"]
    weights = model_cfg.get("pretrained", False) if pretrained is None else pretrained
    try:
        backbone = create_model(model_cfg["name"], num_classes=num_classes, pretrained=weights,
                                **model_kwargs(config))
    except (TypeError, ValueError) as exc:  # unknown model or keyword, bad value
        raise ConfigError(f"model {model_cfg['name']!r}: {exc}") from None
    freeze = int(model_cfg.get("freeze_stages", 0) or 0)
    if freeze:
        backbone.freeze_stages(freeze)
    try:
        return build_method(config["method"]["name"], backbone, **method_kwargs(config))
    except (TypeError, ValueError) as exc:  # unknown method or keyword, bad value
        raise ConfigError(f"method {config['method']['name']!r}: {exc}") from None
