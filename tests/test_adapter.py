"""wsol.models.adapter: torchvision- and timm-layout classifiers as wsol backbones.

The real torchvision/timm packages are not importable here, so the tests define small modules
with exactly their layouts (ResNet: conv1 ... layer4, avgpool, fc; EfficientNet/MobileNet:
features, avgpool, classifier = Sequential(Dropout, Linear); timm: forward_features +
get_classifier()) and check CAM against a hand computation.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from wsol.localization import compute_maps, localize
from wsol.methods import build_method
from wsol.methods.cream_free import TrainingFreeCREAM
from wsol.models.adapter import ClassifierAdapter, as_backbone


class TorchvisionResNetLike(nn.Module):
    """torchvision ResNet layout: stem, layers, avgpool, flatten in forward, fc."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(12, 16, 3, padding=1), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer2(self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x))))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TorchvisionMobileNetLike(nn.Module):
    """torchvision EfficientNet/MobileNet layout: features, avgpool, Sequential(Dropout, Linear)."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 10, 3, stride=2, padding=1), nn.ReLU6(),
                                      nn.Conv2d(10, 6, 1), nn.ReLU6())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(6, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class TimmLike(nn.Module):
    """timm layout: forward_features -> (B, D, h, w), forward_head, get_classifier()."""

    pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 7, 3, padding=1)
        self.stages = nn.Sequential(nn.GELU(), nn.Conv2d(7, 9, 3, stride=2, padding=1), nn.GELU())
        self.head = nn.Linear(9, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: Tensor) -> Tensor:
        return self.head(x.mean(dim=(2, 3)))

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _hand_cam(features: Tensor, weight: Tensor, classes: Tensor) -> Tensor:
    """Eq.1 written out: M_c(y, x) = sum_k w[c, k] F[k, y, x], one image at a time."""
    out = torch.zeros(features.shape[0], *features.shape[2:])
    for b in range(features.shape[0]):
        for k in range(features.shape[1]):
            out[b] += weight[classes[b], k] * features[b, k]
    return out


@pytest.mark.parametrize("make,trunk", [
    (TorchvisionResNetLike, lambda m, x: m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))),
    (TorchvisionMobileNetLike, lambda m, x: m.features(x)),
    (TimmLike, lambda m, x: m.forward_features(x)),
])
def test_adapter_cam_equals_hand_computation(make, trunk, one_thread):
    torch.manual_seed(0)
    model = make().eval()
    adapter = ClassifierAdapter(model)
    x = torch.randn(2, 3, 32, 32)
    head = model.get_classifier() if hasattr(model, "get_classifier") else (
        model.fc if hasattr(model, "fc") else model.classifier[1])
    with torch.no_grad():
        features = trunk(model, x)
        # Same logits as the model's own forward (GAP + the same linear head).
        torch.testing.assert_close(adapter(x), model(x))
        classes = adapter(x).argmax(dim=1)
        cam = build_method("cam", adapter)
        out = cam(x)
        got = cam.localization_maps(out, classes)
    assert adapter.num_classes == head.out_features and adapter.feature_dim == head.in_features
    torch.testing.assert_close(got, _hand_cam(features, head.weight, classes))


def test_adapter_shares_parameters_and_reads_timm_normalization():
    model = TimmLike()
    adapter = ClassifierAdapter(model)
    assert adapter.input_mean == (0.5, 0.5, 0.5) and adapter.input_std == (0.25, 0.25, 0.25)
    # The adapter's parameters are the model's, each exactly once.
    assert {id(p) for p in adapter.parameters()} == {id(p) for p in model.parameters()}
    assert len(list(adapter.parameters())) == len(list(model.parameters()))
    with torch.no_grad():
        model.head.weight.mul_(2.0)  # a change to the model is seen by the adapter
    assert torch.equal(adapter.classifier_weight(), model.head.weight)
    # torchvision layout without a cfg: ImageNet statistics.
    assert ClassifierAdapter(TorchvisionResNetLike()).input_mean == (0.485, 0.456, 0.406)


def test_adapter_explicit_names_and_as_backbone():
    model = TorchvisionResNetLike()
    adapter = ClassifierAdapter(model, features=["conv1", "bn1", "relu", "maxpool", "layer1",
                                                 "layer2"], head="fc")
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(adapter.eval()(x), model(x))
    assert adapter.forward_features(x).shape == (1, 16, 4, 4)
    assert as_backbone(adapter) is adapter
    assert isinstance(as_backbone(model), ClassifierAdapter)


def test_cam_and_training_free_cream_run_unchanged_on_an_adapter(one_thread):
    torch.manual_seed(0)
    adapter = ClassifierAdapter(TorchvisionMobileNetLike())
    x = torch.rand(3, 3, 40, 40)
    for name in ("cam", "cream_free"):
        method = build_method(name, adapter)
        batch = compute_maps(method, x, None, (40, 40))
        assert batch.maps.shape == (3, 40, 40)
        assert float(batch.maps.min()) >= 0.0 and float(batch.maps.max()) <= 1.0
        result = localize(method, x)
        assert result.boxes.shape == (3, 4)
    assert isinstance(build_method("cream_free", adapter), TrainingFreeCREAM)


class NotAClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Conv2d(3, 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


class MLPHead(nn.Module):
    """VGG's layout: the classifier is an MLP, not one linear layer after GAP."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(nn.Linear(4 * 49, 8), nn.ReLU(), nn.Linear(8, 2))


class TokenModel(TimmLike):
    """A transformer-like model: forward_features returns tokens (B, N, D)."""

    def forward_features(self, x: Tensor) -> Tensor:
        return super().forward_features(x).flatten(2).transpose(1, 2)


def test_non_classifiers_raise_type_errors_naming_what_is_missing():
    with pytest.raises(TypeError, match=r"no get_classifier\(\) and no 'fc', 'classifier' or "
                                        r"'head'"):
        ClassifierAdapter(NotAClassifier())
    with pytest.raises(TypeError, match="2 Linear layers"):
        ClassifierAdapter(MLPHead())
    with pytest.raises(TypeError, match="no head 'fc'"):
        ClassifierAdapter(TorchvisionMobileNetLike(), head="fc")
    with pytest.raises(TypeError, match="no child module 'layer9'"):
        ClassifierAdapter(TorchvisionResNetLike(), features=["conv1", "layer9"])
    with pytest.raises(TypeError, match="needs an nn.Module"):
        ClassifierAdapter(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"not a \(B, D, h, w\) feature map"):
        ClassifierAdapter(TokenModel())(torch.randn(1, 3, 8, 8))
    # A trunk that stops too early: the channel count does not match the head.
    wrong = ClassifierAdapter(TorchvisionResNetLike(), features=["conv1"])
    with pytest.raises(TypeError, match="8 channels but the head 'fc' takes 16 inputs"):
        wrong(torch.randn(1, 3, 8, 8))
