"""The benchmark harness: ratio verdicts, interleaving, the generated tables, and that the
"before" variant it times (whole-video decode) serves the same items as the package."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

import benchmarks.__main__ as cli
from benchmarks.common import interleave, ratio
from benchmarks.items import _full_decode_class
from protoef.data import EchoNet, synthetic


def test_ratio_verdicts_follow_the_target():
    assert ratio("x", 1.10, "<= 1.10")["pass"] is True
    assert ratio("x", 1.11, "<= 1.10")["pass"] is False
    assert ratio("x", 1.99, ">= 2")["pass"] is False
    assert ratio("x", 2.0, ">= 2")["pass"] is True
    assert ratio("x", 5.0)["pass"] is None  # informational


def test_interleave_alternates_variants_after_warmup(monkeypatch):
    import benchmarks.common as common

    # A fake clock that each call advances: "a" takes 1, 2, 6 s in its three timed rounds, "b" 1 s.
    clock, calls = [0.0], []
    cost = {"a": iter([0.0, 1.0, 2.0, 6.0]), "b": iter([0.0, 1.0, 1.0, 1.0])}  # first: the untimed warm-up

    def call(name):
        calls.append(name)
        clock[0] += next(cost[name])
    monkeypatch.setattr(common.time, "perf_counter", lambda: clock[0])
    timings = interleave({"a": lambda: call("a"), "b": lambda: call("b")}, 3, warmup=1)
    assert calls == ["a", "b"] * 4  # the warm-up round, then round robin
    assert timings["a"]["n"] == 3 and timings["a"]["min_s"] == 1.0 and timings["a"]["median_s"] == 2.0
    assert timings["b"]["min_s"] == timings["b"]["median_s"] == 1.0


def test_tables_are_written_and_the_readme_block_replaced(tmp_path, monkeypatch):
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    device = {"cpu": "cpu", "cpu_count": 2, "torch_threads": 2, "torch": "2.x", "load_average_1_5_15": [0.5, 0, 0]}
    item = {"title": "t", "device": device, "load_average_at_start": [0.7, 0, 0],
            "ratios": [ratio("speed-up", 2.5, ">= 2", note="n1"), ratio("latency", 0.25, unit="s")]}
    (results / "demo.json").write_text(json.dumps(item))
    (results / "gpu.json").write_text(json.dumps({"title": "GPU", "skipped": "no CUDA", "device": device}))
    (tmp_path / "README.md").write_text("intro\n<!-- benchmarks:begin -->\nstale\n<!-- benchmarks:end -->\noutro\n")
    monkeypatch.setattr(cli, "RESULTS", results)
    cli.write_table()
    table = (results / "README.md").read_text()
    assert "| demo | speed-up | 2.5× | >= 2 | yes | n1 (load 0.7) |" in table
    assert "| demo | latency | 0.250 s | info | — |" in table
    assert "| gpu | GPU | — | — | skipped: no CUDA | |" in table
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("intro\n<!-- benchmarks:begin -->\n") and readme.endswith("<!-- benchmarks:end -->\noutro\n")
    assert "stale" not in readme and "| demo | speed-up | 2.5× |" in readme


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    return synthetic.generate(tmp_path_factory.mktemp("synthetic"), videos=6, seed=1, workers=1, progress=False)


def test_the_before_variant_serves_the_same_items(small_root):
    options = dict(clip_length=8, period=8, resize=32, clips="random", augment=True, with_masks=True,
                   feature_size=(4, 4), background_dilation=1, mean=0.1, std=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        selective = EchoNet(small_root, "ALL", **options)
        whole = _full_decode_class()(small_root, "ALL", **options)
    assert len(selective) == len(whole) == 6
    for index in range(len(selective)):
        torch.manual_seed(index)
        a = selective[index]
        torch.manual_seed(index)
        b = whole[index]
        assert a["clip_starts"].tolist() == b["clip_starts"].tolist()
        assert torch.equal(a["video"], b["video"]) and torch.equal(a["lv_mask"], b["lv_mask"])


def test_paper_projection_from_hand_written_numbers():
    from benchmarks.items import paper_projection

    # 100 training clips/s, 400 evaluation clips/s on EchoNet-Dynamic's 7,465 / 1,288 / 1,277 videos:
    # train 30 × 7465 / 100 = 2239.5 s; validation (30 + 2) × 1288 / 400 = 103.04 s;
    # push 7465 / 400 = 18.6625 s; test 2 × 1277 × 10 / 400 = 63.85 s; 2425.0525 s in all.
    projection = paper_projection(100.0, 400.0)
    assert projection["train_s"] == pytest.approx(2239.5)
    assert projection["validate_s"] == pytest.approx(103.04)
    assert projection["push_s"] == pytest.approx(18.6625)
    assert projection["test_s"] == pytest.approx(63.85)
    assert projection["total_h"] == pytest.approx(2425.0525 / 3600)


def test_gpu_rows_from_hand_written_numbers(tmp_path, monkeypatch):
    from benchmarks.items import gpu_report

    steps = {"fp32": {"n": 10, "min_s": 0.4}, "bf16": {"n": 10, "min_s": 0.16}, "bf16+cl+compile": {"error": "OutOfMemoryError: x"}}
    epoch = {"videos": 120, "workers": 8, "amp": True, "channels_last": True, "train_clips_per_s": 80.0,
             "first_epoch_clips_per_s": 40.0, "eval_clips_per_s": 320.0}
    ddp = {"clips_per_s": 150.0, "wall_s": 95.0}
    result = gpu_report(steps, epoch, ddp, gpu_name="Test GPU", gpus=2)
    rows = {r["name"]: r for r in result["ratios"]}
    assert rows["step bf16 ÷ fp32 (speed-up)"]["value"] == pytest.approx(2.5)  # 100 vs 40 clips/s at batch 16
    assert "OutOfMemoryError" in rows["step bf16+cl+compile: failed"]["note"]
    hours = (30 * 7465 / 80 + 32 * 1288 / 320 + 7465 / 320 + 2 * 1277 * 10 / 320) / 3600
    assert rows["projected paper run: 30 epochs × 7,465 videos + val, push, test (h)"]["value"] == pytest.approx(hours)
    assert rows["DDP 2 processes ÷ 1 process, epoch clips/s (speed-up)"]["value"] == pytest.approx(150 / 80)
    assert result["fastest_step"] == "bf16"
    # The rows as the README table shows them (a failed part reads "—").
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    device = {"cpu": "cpu", "gpu": "Test GPU", "cpu_count": 16, "torch_threads": 16, "torch": "2.x", "load_average_1_5_15": [0.1, 0, 0]}
    (results / "gpu.json").write_text(json.dumps({**result, "device": device, "load_average_at_start": [0.1, 0, 0]}))
    monkeypatch.setattr(cli, "RESULTS", results)
    table = cli.write_table()
    assert "| gpu | step bf16 ÷ fp32 (speed-up) | 2.5× | info | — | 100.0 vs 40.0 clips/s, batch 16, min of 10 (load 0.1) |" in table
    assert f"| gpu | projected paper run: 30 epochs × 7,465 videos + val, push, test (h) | {hours:.1f} h |" in table
    assert "| gpu | step bf16+cl+compile: failed | — |" in table
    assert "| gpu | paper-shape epoch on synthetic 112² data, run defaults (clips/s) | 80 /s |" in table


def test_gpu_check_reports_skipped_without_cuda(monkeypatch):
    from benchmarks import items

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = items.gpu(quick=False)
    assert result["skipped"] == "no CUDA" and result["ratios"] == []


def test_a_native_benchmark_child_inherits_none_of_the_pinned_variables(monkeypatch):
    from benchmarks import runtime
    from protoef import numerics

    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # as `import protoef` leaves this process
    native, pinned = runtime.child_environment("native"), runtime.child_environment("pinned")
    assert not set(numerics.PINNED_VARIABLES) & set(native) and native["PROTOEF_NUMERICS"] == "native"
    assert pinned["PROTOEF_NUMERICS"] == "pinned"  # the child's own import protoef pins it
