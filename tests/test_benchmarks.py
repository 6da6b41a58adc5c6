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


def test_interleave_alternates_variants_after_warmup():
    calls = []
    timings = interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert timings["a"]["n"] == 3 and timings["a"]["min_s"] <= timings["a"]["median_s"]


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
