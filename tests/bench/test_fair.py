"""The fair benchmark's dry run: the same harness and suite at interpreter sizes on the CPU (times are
not performance figures; what is checked is the machinery: contenders checked against eager,
interleaved rounds, ratios with ranges, results appended and the next run's plan skipping them)."""

import json

import pytest
import torch

from bench import fair, harness
from bench.suite import ROWS, SUBSET


def test_dry_run_appends_rows_and_the_next_plan_skips_them(tmp_path, capsys):
    rows = ["conv3x3 64ch 56x56 b32", "lstm h512 seq100 b64", "cifar_cnn training step b128", "adam step 939MB",
            "pointwise chain 256MB"]
    assert fair.main(["--scale", "tiny", "--rounds", "2", "--out", str(tmp_path), "--profile", "--rows", *rows]) == 0
    (jsonl,) = tmp_path.glob("fair_*.jsonl")
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["row"] for r in records] == rows
    for record in records:
        assert record["rounds"] == 2 and set(record["median_ms"]) >= {"eager", "fusegraph"}
        ratio = record["ratios_vs_fusegraph"]["eager"]
        assert ratio["min"] <= ratio["median"] <= ratio["max"]
        assert record["max_abs_error_vs_eager"]["fusegraph"] < 1e-4
        assert "compile" in record["left_out"]  # said, not silently missing
        assert record["profile"] == {"left_out": "kernel profiles need a CUDA GPU"}
    assert "moved_bytes" in records[-1] and records[-1]["copy_ms"] > 0
    assert "pointwise chain 256MB" in jsonl.with_suffix(".md").read_text()
    planned = [row.name for row in fair.plan(None, jsonl, budget=10_000)]
    assert planned[0] == next(name for name in SUBSET if name not in rows) and not set(rows) & set(planned)
    assert [row.name for row in fair.plan(None, jsonl, budget=1)] == []
    half = [row.name for row in fair.plan(None, jsonl, budget=10_000, dtype="float16")]
    assert half[0] == SUBSET[0] and "cifar_cnn training step b128" in half and "adam step 939MB" not in half


def test_a_half_precision_training_row_is_mixed_precision_against_autocast(tmp_path):
    """--dtype float16 on a training row: a float32 model trained by torch's autocast + GradScaler recipe
    and by fg.compile(precision="fp16"), their first losses checked against each other."""
    row = "cifar_resnet training step b128"
    assert fair.main(["--scale", "tiny", "--rounds", "1", "--out", str(tmp_path), "--rows", row,
                      "--dtype", "float16"]) == 0
    (jsonl,) = tmp_path.glob("fair_*.jsonl")
    (record,) = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert record["mixed_precision"] and record["dtype"] == "float16"
    assert record["max_abs_error_vs_eager"]["fusegraph"] < fair.TOLERANCE["float16"]
    assert f"**{row}** (float16 mixed precision" in jsonl.with_suffix(".md").read_text()
    assert row in [r.name for r in fair.plan(None, jsonl, budget=10_000)]  # float32's row is still to run


def test_first_call_latency_cold_then_warm(tmp_path):
    row = "max pool 2x2 268MB"
    assert fair.main(["--scale", "tiny", "--rounds", "1", "--out", str(tmp_path), "--rows", row, "--cold-start"]) == 0
    (jsonl,) = tmp_path.glob("fair_*.jsonl")
    latency = json.loads(jsonl.read_text())["first_call_cold_warm_s"]
    assert set(latency) == {"cold", "warm"} and all(latency[k]["fusegraph"] > 0 for k in latency)
    assert "first call, s: cold:" in jsonl.with_suffix(".md").read_text()


def test_host_cost_per_launch_is_measured_against_bare_triton_launches(tmp_path):
    assert fair.main(["--scale", "tiny", "--rows", "--out", str(tmp_path), "--host-cost", "lenet_digits"]) == 0
    (jsonl,) = tmp_path.glob("fair_*.jsonl")
    (record,) = [json.loads(line) for line in jsonl.read_text().splitlines()]
    cost = record["host_cost"]
    assert record["row"] == "host cost per launch: lenet_digits" and cost["launches_per_call"] == 5
    assert cost["ratio"] == pytest.approx(cost["fusegraph_us_per_launch"] / cost["bare_triton_us_per_launch"])
    assert "(target <= 1.5x)" in jsonl.with_suffix(".md").read_text()


def test_every_suite_row_builds_at_tiny_scale_and_matches_torch():
    for row in ROWS.values():
        contenders, _, _ = fair.contenders_for(row, "tiny", "exact")
        harness.check_against_eager(contenders, tolerance=1e-4)


def test_interleaved_rounds_rotate_and_ratios_are_per_round():
    order = []
    contenders = [harness.Contender(name, lambda name=name: order.append(name)) for name in ("fusegraph", "a", "b")]
    times = harness.interleaved(contenders, rounds=3, time_ms=lambda fn: fn() or float(len(order)))
    assert order == ["fusegraph", "a", "b", "a", "b", "fusegraph", "b", "fusegraph", "a"]
    assert times == {"fusegraph": [1.0, 6.0, 8.0], "a": [2.0, 4.0, 9.0], "b": [3.0, 5.0, 7.0]}
    ratio = harness.ratios(times)["a"]
    assert ratio == {"median": pytest.approx(9 / 8), "min": pytest.approx(4 / 6), "max": pytest.approx(2.0)}  # 2/1, 4/6, 9/8


def test_a_contender_that_disagrees_with_eager_fails_the_row():
    model, feeds = ROWS["pointwise chain 256MB"].build("tiny")
    contenders, _ = harness.forward_contenders(model, feeds, cuda=False)
    contenders.append(harness.Contender("wrong", lambda: feeds[0], first_result=feeds[0]))
    with pytest.raises(AssertionError, match="wrong differs from eager"):
        harness.check_against_eager(contenders, tolerance=1e-4)


def test_channels_last_rows_give_every_contender_channels_last_images(tmp_path, monkeypatch):
    """--memory-format channels_last: torch's module and images and fusegraph's edges alike; a row
    measured so is on file apart from the contiguous one."""
    seen = []
    real = harness.in_memory_format

    def spy(feeds, module, memory_format):
        feeds, module = real(feeds, module, memory_format)
        seen.extend(f.is_contiguous(memory_format=torch.channels_last) for f in feeds if f.dim() == 4)
        return feeds, module

    monkeypatch.setattr(harness, "in_memory_format", spy)
    row = "vgg conv3x3+relu+pool 64ch 112x112 b32"
    assert fair.main(["--scale", "tiny", "--rounds", "1", "--out", str(tmp_path), "--rows", row,
                      "--memory-format", "channels_last"]) == 0
    (jsonl,) = tmp_path.glob("fair_*.jsonl")
    (record,) = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert record["memory_format"] == "channels_last" and record["max_abs_error_vs_eager"]["fusegraph"] < 1e-4
    assert seen and all(seen)
    assert row in [r.name for r in fair.plan(None, jsonl, budget=10_000)]  # the contiguous row is still to run
    assert row not in [r.name for r in fair.plan(None, jsonl, budget=10_000, memory_format="channels_last")]


def test_the_conv_gradient_sweep_checks_each_planted_launch_on_the_cpu(tmp_path, monkeypatch):
    """bench/tune_gpu.py's conv-gradient sweep, its machinery at a tiny shape in the interpreter (the
    GPU session that runs it cannot afford a crash): each table planted in turn, every configuration's
    gradients checked against torch.autograd, the table left as it was."""
    from bench import tune_gpu
    from fusegraph.kernels.registry import GPU_TUNING

    monkeypatch.setattr(tune_gpu, "DEVICE", "cpu")
    monkeypatch.setattr(tune_gpu, "GRAD_BATCH", 2)
    monkeypatch.setattr(tune_gpu, "RESNET_STAGES", [(16, 4)])
    monkeypatch.setattr(tune_gpu, "GRAD_TILES", tune_gpu.GRAD_TILES[:1])
    monkeypatch.setattr(tune_gpu, "median_ms", lambda fn: 1.0)
    monkeypatch.setattr(tune_gpu, "save", lambda results, out: None)
    results = {"conv_grad": []}
    tune_gpu.sweep_conv_grad(results, deadline=float("inf"), out=str(tmp_path))
    rows = results["conv_grad"]
    assert {r["table"] for r in rows} == {"conv_input_grad", "conv_weight_grad"}
    assert all(r["ok"] and r["max_rel_error"] < 1e-4 for r in rows), rows
    assert len(rows) == 2 * (1 + 1 + 5)  # the rule, one tile, then warps x stages around it
    assert GPU_TUNING["conv_input_grad"] == {} and GPU_TUNING["conv_weight_grad"] == {}
    assert "conv_input_grad" in tune_gpu.markdown({"environment": {"device": "cpu", "torch": "", "triton": ""},
                                                   "benchmark": "", "recurrent": [], "precision": [],
                                                   "persistent": [], "conv": [], **results})
