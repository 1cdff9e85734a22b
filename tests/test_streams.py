"""CPU inference streams (wsol.utils.streams): per-thread intra-op pools, nothing changed
outside the workers, and the same numbers as one call, for every backbone and precision."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import tiny_overrides, torch_threads

from wsol.config import load_config
from wsol.errors import ConfigError, UserError
from wsol.localization.pipeline import compute_maps, stream_safe
from wsol.methods import build_method
from wsol.models import create_model
from wsol.utils.precision import cpu_has_native_bf16
from wsol.utils.streams import (ForwardStreams, caller_threads, check_streams,
                                resolve_chunk_size, resolve_streams)


def test_workers_run_one_intra_op_thread_and_the_caller_keeps_its_own(two_threads):
    with ForwardStreams(2) as streams:
        both = threading.Barrier(2, timeout=10)  # each of the first two items waits for the other

        def where(k):
            if k < 2:
                both.wait()
            return threading.current_thread().name, torch.get_num_threads()

        seen = streams.map(where, range(4))
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


def test_hold_cores_puts_the_caller_on_one_thread_for_the_block_only(two_threads):
    with ForwardStreams(2) as streams:
        with streams.hold_cores():
            assert torch.get_num_threads() == 1
            later: list[int] = []  # a thread started in the block (the prefetch thread)
            t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
            t.start()
            t.join()
            assert later == [1]
            # auto still means one stream per thread the caller had
            assert caller_threads() == 2 and resolve_streams("auto", "cpu", "bf16") == 2
            with streams.hold_cores():  # nested: no change, and the outer restore still holds
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == 1
            assert streams.map(lambda k: torch.get_num_threads(), range(3)) == [1, 1, 1]
        assert torch.get_num_threads() == 2 and caller_threads() == 2
        with pytest.raises(RuntimeError, match="inside"), streams.hold_cores():
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
    with ForwardStreams(1) as one, one.hold_cores():  # chunks on the caller's threads
        assert torch.get_num_threads() == 2


def test_a_busy_stream_does_not_hold_the_others_back():
    """One queue for all streams: while one worker is stuck on an item, the other takes every
    item after it (a static split would leave half of them waiting)."""
    with ForwardStreams(2) as streams:
        release = threading.Event()
        names: dict[int, str] = {}

        def item(k):
            names[k] = threading.current_thread().name
            if k == 0:
                assert release.wait(10)
            elif k == 5:
                release.set()
            return k

        assert streams.map(item, range(6)) == list(range(6))
        assert len({names[k] for k in range(1, 6)}) == 1 and names[1] != names[0]


def test_submit_returns_at_once_and_result_waits():
    with ForwardStreams(2) as streams:
        go = threading.Event()
        pending = streams.submit(lambda k: go.wait(10) and k * 10, [1, 2, 3])
        go.set()  # had submit waited, this line would never run in time
        assert pending.result() == [10, 20, 30]
    one = ForwardStreams(1)
    ran: list[int] = []
    pending = one.submit(ran.append, [1, 2])
    assert ran == []  # one stream: the items run in result(), in the caller's thread
    assert pending.result() == [None, None] and ran == [1, 2]


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
    assert resolve_streams(3, "cpu") == 3 and resolve_streams(3, "cpu", False) == 3
    assert resolve_streams("auto", "cpu", "bf16") == torch.get_num_threads()
    assert resolve_streams("auto", "cpu", False) == 1  # float32: one call (module docstring)
    assert resolve_streams(4, "meta") == 1  # off the CPU: never
    with pytest.raises(ValueError):
        ForwardStreams(0)
    with pytest.raises(ValueError):
        ForwardStreams(2, 0)
    assert resolve_chunk_size("auto", "cpu", "bf16") == 4 and resolve_chunk_size(7, "cpu") == 7
    assert resolve_chunk_size("auto", "meta") is None  # off the CPU: the whole batch
    with pytest.raises(ConfigError, match="eval.chunk_size"):
        load_config(None, ["eval.chunk_size=auto4"])
    with pytest.raises(ConfigError, match="eval.streams"):
        load_config(None, ["eval.streams=0"])
    from wsol.api import Localizer

    with pytest.raises(UserError, match="streams"):
        Localizer(build_method("cam", create_model("tiny_cnn", num_classes=3, width=4)),
                  streams="many")


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=gen)


def _assert_equal(one, split, stages):
    assert torch.equal(one.maps, split.maps)
    assert torch.equal(one.logits, split.logits)
    assert torch.equal(one.classes, split.classes)
    assert one.stages.keys() == split.stages.keys() == set(stages)
    for key in one.stages:
        assert torch.equal(one.stages[key], split.stages[key])


#: (streams, chunk size) layouts: halves, chunks of 4 / 2 over 2 or 3 streams, chunks of 4 in
#: the caller's thread (on its two intra-op threads).
LAYOUTS = ((2, None), (2, 4), (2, 2), (3, 2), (1, 4))
native_bf16 = pytest.mark.skipif(not cpu_has_native_bf16(),
                                 reason="the bf16 invariance is checked on CPUs with native bf16")


def _variants(method, images, classes, amp, channels_last, stages=()):
    """One call on two threads, one call on one thread, and every layout of LAYOUTS."""
    if channels_last:
        method.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)

    def maps(streams=None):
        return compute_maps(method, images, classes, (96, 96), amp=amp, stages=stages,
                            streams=streams)

    out = {"two threads": maps()}
    with torch_threads(1):
        out["one thread"] = maps()
    for count, chunk in LAYOUTS:
        with ForwardStreams(count, chunk) as streams:
            out[(count, chunk)] = maps(streams)
    method.to(memory_format=torch.contiguous_format)
    return out


def _assert_same(method, images, classes, stages=()):
    """In bf16 + NHWC every layout gives bit-identical maps, logits, classes and stage maps to
    one call in the caller's thread."""
    out = _variants(method, images, classes, "bf16", True, stages)
    out.pop("one thread")  # float32 steps after the forward (CREAM's EM) depend on threads
    ref = out.pop("two threads")
    for key, got in out.items():
        assert torch.equal(ref.maps, got.maps), key
        assert torch.equal(ref.logits, got.logits), key
        assert torch.equal(ref.classes, got.classes), key
        assert ref.stages.keys() == got.stages.keys() == set(stages)
        for stage in stages:
            assert torch.equal(ref.stages[stage], got.stages[stage]), (key, stage)


@native_bf16
@pytest.mark.parametrize("model", ["efficientnet_lite0", "resnet50", "vgg16", "inception_v3",
                                   "tiny_cnn"])
def test_streams_and_chunks_keep_every_number_in_bf16(model, two_threads):
    torch.manual_seed(0)
    method = build_method("cam", create_model(model, num_classes=5)).eval()
    size = 128 if model != "tiny_cnn" else 64
    # 9 images: unequal chunks (4 + 5: no chunk of one), top-1 classes and given classes.
    _assert_same(method, _images(9, size), None)
    _assert_same(method, _images(9, size, 1), torch.tensor([4, 0, 1, 2, 3, 4, 0, 1, 2]))


@pytest.mark.parametrize("model", ["efficientnet_lite0", "resnet50"])
def test_float32_layouts_agree_to_rounding_and_auto_keeps_one_call(model, two_threads):
    """float32 kernels sum in other orders for other batch sizes and thread counts, so layouts
    are only close there, and ``auto`` does not use them."""
    torch.manual_seed(0)
    method = build_method("cam", create_model(model, num_classes=5)).eval()
    out = _variants(method, _images(9, 128), None, False, False)
    ref = out.pop("two threads")
    for key, got in out.items():
        torch.testing.assert_close(got.maps, ref.maps, rtol=0, atol=1e-5, msg=str(key))
        torch.testing.assert_close(got.logits, ref.logits, rtol=1e-4, atol=1e-6, msg=str(key))
    assert resolve_streams("auto", "cpu", False) == 1
    assert resolve_chunk_size("auto", "cpu", False) is None


@native_bf16
@pytest.mark.parametrize("name", ["cream", "bcam", "acol", "adl", "has", "cutmix", "cream_free"])
def test_streams_and_chunks_keep_every_number_for_every_method(name, two_threads):
    torch.manual_seed(0)
    method = build_method(name, create_model("efficientnet_lite0", num_classes=4)).eval()
    stages = ("cam", "calibrated", "fused") if name == "cream" else ()
    _assert_same(method, _images(9, 96), None, stages)


@native_bf16
def test_real_cub_images_in_streams_equal_one_call(shared, two_threads):
    from wsol.data.transforms import EvalTransform, load_image

    root = shared("data", "CUB_200_2011-classes001-010", "images")
    paths = sorted(root.glob("*/*.jpg"))[:9]
    images = torch.stack([EvalTransform()(load_image(p)) for p in paths])
    torch.manual_seed(0)
    method = build_method("cream", create_model("efficientnet_lite0", num_classes=10)).eval()
    _assert_same(method, images, None, ("cam", "calibrated", "fused"))


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


def test_start_maps_returns_while_the_forward_runs_and_result_finishes_it():
    from wsol.localization.pipeline import compute_maps, eval_mode, start_maps

    torch.manual_seed(0)
    method = build_method("cam", create_model("tiny_cnn", num_classes=3, width=4)).train()
    images = _images(6, 32)
    expected = compute_maps(method, images, streams=None)
    assert method.training  # compute_maps put the mode back
    go, entered = threading.Event(), threading.Event()

    def hold(module, args):
        entered.set()
        assert go.wait(10)

    handle = method.register_forward_pre_hook(hold)
    try:
        with ForwardStreams(2, 2) as streams:
            started = start_maps(method, images, streams=streams)
            assert entered.wait(10) and not method.training  # queued, running, in eval mode
            go.set()
            got = started.result()
            assert method.training  # the result puts the mode back
            with pytest.raises(RuntimeError, match="already"):
                started.result()

            def fail(module, args):
                raise RuntimeError("chunk failed")

            handle.remove()
            handle = method.register_forward_pre_hook(fail)
            with eval_mode(method):
                broken = start_maps(method, images, streams=streams)  # returns: queued
                with pytest.raises(RuntimeError, match="chunk failed"):
                    broken.result()
                assert not method.training  # eval_mode holds it for the loop
            assert method.training
    finally:
        handle.remove()
    assert torch.allclose(got.maps, expected.maps, atol=1e-6)
    assert torch.equal(got.classes, expected.classes)


@native_bf16
def test_evaluate_in_streams_gives_the_results_of_one_call(synthetic, tmp_path, two_threads):
    from wsol.engine.build import build_from_config
    from wsol.engine.train import evaluate_split

    config = load_config(None, tiny_overrides(synthetic, tmp_path / "run", "eval.amp=bf16",
                                              "eval.channels_last=true"))
    torch.manual_seed(0)
    method = build_from_config(config, num_classes=3).eval()
    cpu = torch.device("cpu")
    one = evaluate_split(method, config, "test", cpu, method.backbone, streams=1,
                         chunk_size=10_000)  # one call per batch
    two = evaluate_split(method, config, "test", cpu, method.backbone)  # auto: 2 streams
    assert (one.pop("streams"), two.pop("streams")) == (1, 2)
    assert (one.pop("chunk_size"), two.pop("chunk_size")) == (10_000, 4)
    assert one == two
    assert torch.get_num_threads() == 2  # the loop's hold_cores is over
    with pytest.raises(UserError, match="streams"):
        evaluate_split(method, config, "test", cpu, method.backbone, streams=0)


@native_bf16
def test_localizer_in_streams_gives_the_boxes_of_one_call(shared, two_threads):
    from wsol.api import Localizer

    root = shared("data", "CUB_200_2011-classes001-010", "images")
    paths = [str(p) for p in sorted(root.glob("*/*.jpg"))[:9]]
    torch.manual_seed(0)
    method = build_method("cam", create_model("efficientnet_lite0", num_classes=10)).eval()
    streamed = Localizer(method, batch_size=4)  # batches of 4, 4, 1: one always in flight
    layout = streamed.forward_streams()
    assert (layout.count, layout.chunk_size) == (2, 4)  # auto on a CPU with native bf16
    out = streamed(paths)
    # the streams outlive the call, still two (auto resolved inside hold_cores), and the
    # caller has its threads back
    assert streamed.forward_streams() is layout and torch.get_num_threads() == 2
    one = Localizer(method, batch_size=9, streams=1, chunk_size=9)(paths)
    assert torch.equal(out.maps, one.maps) and torch.equal(out.boxes, one.boxes)
    assert torch.equal(out.classes, one.classes) and torch.equal(out.scores, one.scores)


def test_streams_dropped_without_close_are_stopped_and_joined():
    streams = ForwardStreams(2)
    workers = list(streams._threads)
    assert streams.map(lambda k: k * k, range(5)) == [0, 1, 4, 9, 16]
    del streams
    gc.collect()
    assert workers and not any(t.is_alive() for t in workers)


_DROPPED_LOCALIZERS = """
import sys
from pathlib import Path
import torch
from wsol.api import Localizer
from wsol.methods import build_method
from wsol.models import create_model
torch.manual_seed(0)
method = build_method("cam", create_model("efficientnet_lite0", num_classes=10)).eval()
paths = [str(p) for p in sorted(Path(sys.argv[1]).glob("*/*.jpg"))[:16]]
for _ in range(4):  # each dropped without close(), its streams idle or being collected
    Localizer(method, batch_size=8, amp="bf16", streams=2, chunk_size=4)(paths)
print("done")
"""


def test_a_process_that_drops_localizers_exits_cleanly(shared, tmp_path):
    """Workers still waiting on their queue during interpreter teardown aborted the process
    after its work ("terminate called without an active exception", exit 134) in about one
    run in four before the streams were joined at exit; six real processes must all exit 0."""
    root = shared("data", "CUB_200_2011-classes001-010", "images")
    script = tmp_path / "dropped.py"
    script.write_text(_DROPPED_LOCALIZERS)

    def run(_):
        return subprocess.run([sys.executable, str(script), str(root)], capture_output=True,
                              text=True, timeout=300)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, range(6)))
    for r in results:
        assert r.returncode == 0 and r.stdout.strip() == "done", (r.returncode, r.stderr[-800:])
