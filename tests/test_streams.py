"""CPU inference streams (wsol.utils.streams): per-thread intra-op pools, nothing changed
outside the workers, and the same numbers as one call, for every backbone and precision."""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import tiny_overrides

from wsol.config import load_config
from wsol.errors import ConfigError, UserError
from wsol.localization.pipeline import compute_maps, stream_safe
from wsol.methods import build_method
from wsol.models import create_model
from wsol.utils.precision import cpu_has_native_bf16
from wsol.utils.streams import ForwardStreams, check_streams, resolve_streams


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_workers_run_one_intra_op_thread_and_the_caller_keeps_its_own(two_threads):
    with ForwardStreams(2) as streams:
        seen = streams.map(lambda _: (threading.current_thread().name, torch.get_num_threads()),
                           range(4))
        assert [n for _, n in seen] == [1, 1, 1, 1]
        assert {name for name, _ in seen} == {"wsol-stream-0", "wsol-stream-1"}
        assert torch.get_num_threads() == 2
        # A thread started after the workers inherits the caller's count, not theirs.
        later: list[int] = []
        t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        t.start()
        t.join()
        assert later == [2]
    assert not streams._threads  # closed


def test_map_keeps_order_and_raises_a_worker_error_in_the_caller():
    with ForwardStreams(3) as streams:
        assert streams.map(lambda x: x * x, list(range(7))) == [x * x for x in range(7)]

        def fail(x):
            if x == 2:
                raise KeyError("chunk 2")
            return x

        with pytest.raises(KeyError, match="chunk 2"):
            streams.map(fail, [0, 1, 2, 3])
        assert streams.map(lambda x: -x, [1, 2]) == [-1, -2]  # still usable after a failure


def test_values_are_checked():
    for bad in (0, -1, 1.5, True, "two", None):
        with pytest.raises(ValueError, match="eval.streams must be auto or an integer"):
            check_streams(bad, "eval.streams")
    assert resolve_streams(3, "cpu") == 3
    assert resolve_streams("auto", "cpu") == torch.get_num_threads()
    with pytest.raises(ValueError):
        ForwardStreams(0)
    with pytest.raises(ConfigError, match="eval.streams"):
        load_config(None, ["eval.streams=0"])
    from wsol.api import Localizer

    with pytest.raises(UserError, match="streams"):
        Localizer(build_method("cam", create_model("tiny_cnn", num_classes=3, width=4)),
                  streams="many")


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=gen)


def _assert_same(method, images, classes, amp, channels_last, stages=()):
    """Streams (2 chunks) give the numbers of one call on one thread; with bf16 + NHWC on a CPU
    with native bf16 also those of one call on two threads."""
    if channels_last:
        method.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    with ForwardStreams(2) as streams:
        split = compute_maps(method, images, classes, (96, 96), amp=amp, stages=stages,
                             streams=streams)
    references = []
    torch.set_num_threads(1)
    try:
        references.append(compute_maps(method, images, classes, (96, 96), amp=amp,
                                       stages=stages))
    finally:
        torch.set_num_threads(2)
    if amp == "bf16" and channels_last and cpu_has_native_bf16():
        references.append(compute_maps(method, images, classes, (96, 96), amp=amp,
                                       stages=stages))
    method.to(memory_format=torch.contiguous_format)
    for one in references:
        assert torch.equal(one.maps, split.maps)
        assert torch.equal(one.logits, split.logits)
        assert torch.equal(one.classes, split.classes)
        assert one.stages.keys() == split.stages.keys() == set(stages)
        for key in one.stages:
            assert torch.equal(one.stages[key], split.stages[key])


@pytest.mark.parametrize("model", ["efficientnet_lite0", "resnet50", "vgg16", "inception_v3",
                                   "tiny_cnn"])
@pytest.mark.parametrize("amp,channels_last", [(False, False), ("bf16", True)])
def test_streams_give_the_numbers_of_one_call(model, amp, channels_last, two_threads):
    torch.manual_seed(0)
    method = build_method("cam", create_model(model, num_classes=5)).eval()
    size = 160 if model != "tiny_cnn" else 64
    # 5 images into 2 chunks (3 + 2): unequal chunks; top-1 classes and given classes.
    _assert_same(method, _images(5, size), None, amp, channels_last)
    _assert_same(method, _images(5, size, 1), torch.tensor([4, 0, 1, 2, 3]), amp, channels_last)


@pytest.mark.parametrize("name", ["cream", "bcam", "acol", "adl", "has", "cutmix", "cream_free"])
def test_streams_give_the_numbers_of_one_call_for_every_method(name, two_threads):
    torch.manual_seed(0)
    method = build_method(name, create_model("efficientnet_lite0", num_classes=4)).eval()
    stages = ("cam", "calibrated", "fused") if name == "cream" else ()
    _assert_same(method, _images(4, 128), None, "bf16", True, stages)


def test_real_cub_images_in_streams_equal_one_call(shared, two_threads):
    from wsol.data.transforms import EvalTransform, load_image

    root = shared("data", "CUB_200_2011-classes001-010", "images")
    paths = sorted(root.glob("*/*.jpg"))[:6]
    images = torch.stack([EvalTransform()(load_image(p)) for p in paths])
    torch.manual_seed(0)
    method = build_method("cream", create_model("efficientnet_lite0", num_classes=10)).eval()
    _assert_same(method, images, None, "bf16", True, ("cam", "calibrated", "fused"))
    _assert_same(method, images, None, False, False)


def test_stateful_forwards_run_as_one_call():
    from wsol.models.adapter import ClassifierAdapter

    tiny = create_model("tiny_cnn", num_classes=3, width=4)
    assert stream_safe(build_method("cam", tiny))
    assert not stream_safe(build_method("spg", create_model("efficientnet_lite0", num_classes=3)))
    net = torch.nn.Sequential()
    net.add_module("features", torch.nn.Conv2d(3, 8, 3))
    net.add_module("pool", torch.nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", torch.nn.Flatten())
    net.add_module("fc", torch.nn.Linear(8, 3))
    adapted = build_method("cam", ClassifierAdapter(net))
    assert not stream_safe(adapted)  # someone else's model: no assumption about its state
    adapted.backbone.stream_safe = True
    assert stream_safe(adapted)


def test_evaluate_in_streams_gives_the_results_of_one_call(synthetic, tmp_path, two_threads):
    from wsol.engine.build import build_from_config
    from wsol.engine.train import evaluate_split

    config = load_config(None, tiny_overrides(synthetic, tmp_path / "run"))
    torch.manual_seed(0)
    method = build_from_config(config, num_classes=3).eval()
    cpu = torch.device("cpu")
    torch.set_num_threads(1)  # the numbers of streams are those of a one-thread run
    try:
        one = evaluate_split(method, config, "test", cpu, method.backbone, streams=1)
    finally:
        torch.set_num_threads(2)
    two = evaluate_split(method, config, "test", cpu, method.backbone)  # auto: 2 streams
    assert (one.pop("streams"), two.pop("streams")) == (1, 2)
    assert one == two
    with pytest.raises(UserError, match="streams"):
        evaluate_split(method, config, "test", cpu, method.backbone, streams=0)
