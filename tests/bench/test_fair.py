"""The fair benchmark's dry run: the same harness and suite at interpreter sizes on the CPU (times are
not performance figures; what is checked is the machinery: contenders checked against eager,
interleaved rounds, ratios with ranges, every failure recorded while the run goes on, results appended
atomically and the next run's plan skipping them, the budget held)."""

import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bench import fair, harness, records, suite
from bench.suite import ROWS, SUBSET, Row

REPO = Path(__file__).resolve().parents[2]


def _records(folder: Path) -> list[dict]:
    (jsonl,) = folder.glob("fair_*.jsonl")
    return records.read(jsonl)


def test_dry_run_appends_rows_and_the_next_plan_skips_them(tmp_path):
    rows = ["conv3x3 64ch 56x56 b32", "lstm h512 x2 stacked b64", "cifar_cnn training step b128", "adam step 939MB",
            "pointwise chain 256MB"]
    assert fair.main(["--scale", "tiny", "--rounds", "2", "--out", str(tmp_path), "--profile", "--rows", *rows]) == 0
    (jsonl,) = tmp_path.glob("fair_*.jsonl")
    measured = records.read(jsonl)
    assert [r["row"] for r in measured] == rows
    for record in measured:
        assert record["rounds"] == 2 and set(record["median_ms"]) >= {"eager", "fusegraph"}
        ratio = record["ratios_vs_fusegraph"]["eager"]
        assert ratio["min"] <= ratio["median"] <= ratio["max"]
        assert record["max_abs_error_vs_eager"]["fusegraph"] < 1e-4
        assert "compile" in record["left_out"]  # said, not silently missing
        assert record["profile"] == {"left_out": "kernel profiles need a CUDA GPU"}
        assert record["cudnn_benchmark"] and not record["failed"] and not record["eager_fallbacks"]
        assert record["best_torch"]["name"] == "eager"  # the only torch contender the CPU times
        assert record["best_torch"]["ratio"] == record["ratios_vs_fusegraph"]["eager"]
    assert measured[0]["fusegraph_label"] == "fusegraph (one by one: CUDA graphs off)"  # no CUDA graph on the CPU: said
    assert "moved_bytes" in measured[-1] and measured[-1]["copy_ms"] > 0
    table = jsonl.with_suffix(".md").read_text()
    assert "pointwise chain 256MB" in table and "best torch: eager" in table
    planned = fair.plan(suite, jsonl, budget=10_000)
    assert planned[:len(suite.FIRST_CALL)] == suite.FIRST_CALL
    rest = [job.row for job in planned[len(suite.FIRST_CALL):]]
    assert rest[0] == next(name for name in SUBSET if name not in rows) and not set(rows) & set(rest)
    assert fair.plan(suite, jsonl, budget=1) == []


def test_the_first_call_plan_fits_one_device_call(capsys):
    """`--plan`: the jobs the issue names (bf16 channels-last CIFAR ResNet training, two fp16 channels-last
    ResNet-stage convs, an fp16 LSTM at hidden 1024, three zoo models' host cost) within 540 s, and the
    GPU tests as the second call."""
    assert fair.main(["--plan", "--out", "/nonexistent/results"]) == 0
    printed = capsys.readouterr().out
    planned = fair.plan(suite, Path("/nonexistent/results/fair.jsonl"), budget=480)
    assert planned == suite.FIRST_CALL
    keys = {job.key for job in planned}
    assert ("cifar_resnet training step b128", "bfloat16", "exact", "channels_last") in keys
    assert {("conv3x3 64ch 56x56 b32", "float16", "exact", "channels_last"),
            ("conv3x3 256ch 14x14 b128", "float16", "exact", "channels_last"),
            ("lstm h1024 seq100 b256", "float16", "exact", "contiguous")} <= keys
    assert sum(job.host_cost for job in planned) == 3
    total = sum(fair.expected_seconds(job, suite, {}) for job in planned)
    assert total <= 480 < 540 and f"expected about {total:.0f} s" in printed
    assert f"gpu_check.sh OUT tests (the GPU tests, limit {fair.GPU_TESTS_LIMIT_S} s)" in printed
    script = (REPO / "bench" / "gpu_check.sh").read_text()
    assert "tests) stage tests 150 " in script and "timeout -k" in script and "fair) stage fair 490 " in script
    assert "install) stage install 60 " in script and 60 + 490 + 2 * 10 < 600  # limits (and kills) fit one call
    # the MNIST demo's GPU run is a stage of its own (`demo`), left out of the tests stage's 150 s
    assert '-k "not mnist_demo"' in script and "demo) stage demo 120 " in script
    assert script.count('FUSEGRAPH_GPU_RECORD="$out/gpu_tests.jsonl"') == 2


def test_the_plan_uses_measured_times_and_retries_failed_jobs(tmp_path):
    path = tmp_path / "fair_cpu.jsonl"
    first = suite.FIRST_CALL[0]
    records.append(path, {"row": first.row, "dtype": first.dtype, "memory_format": first.memory_format,
                          "wall_s": 470.0, "median_ms": {}})  # measured: done, and slow
    records.append(path, {"row": suite.FIRST_CALL[1].row, "dtype": "float16", "memory_format": "channels_last",
                          "wall_s": 3.0, "row_failed": {"error": "RuntimeError", "message": "planted"}})
    planned = fair.plan(suite, path, budget=480)
    assert first not in planned and planned[0] == suite.FIRST_CALL[1]  # a failed job is tried again
    assert fair.expected_seconds(suite.FIRST_CALL[1], suite, fair.measured_seconds(path)) == 3.0
    assert fair.plan(suite, path, budget=480, rows=[first.row], dtype="float16",
                     memory_format="channels_last") == [first]  # named rows run whatever is on file


class _Opaque(torch.nn.Module):
    """A module Dynamo cannot look into: torch.compile of it compiles no graph and runs eager."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    @torch.compiler.disable
    def forward(self, *xs):
        return self.inner(*xs)


def test_a_failing_row_and_an_eager_fallback_are_recorded_while_later_rows_run(tmp_path, monkeypatch):
    """The done-when of the GPU-readiness issue, on the CPU: a row whose build raises, a compile contender
    Dynamo sent to eager, a contender that raises while timed and a truncated line on file are each
    recorded (exception, last frames), and the rows after them are measured."""

    def broken(scale, dtype="float32"):
        raise RuntimeError("planted: this row cannot build")

    monkeypatch.setitem(ROWS, "planted failing row", Row("planted failing row", broken, 1))
    real = harness.forward_contenders

    def with_planted_contenders(model, feeds, *args, **kwargs):
        lineup = real(model, feeds, *args, **kwargs)
        eager = model.to_torch().eval()
        with torch.no_grad():
            flaky = iter([eager(*feeds)])  # its first call answers right; timing it raises
        return lineup.build({
            "compile": lambda: harness.compiled_forward(eager, feeds, mode=None, backend="eager"),
            "compile-max": lambda: harness.compiled_forward(_Opaque(eager), feeds, mode=None, backend="eager"),
            "flaky": lambda: (lambda: next(flaky)),
        })

    monkeypatch.setattr(fair, "forward_contenders", with_planted_contenders)
    (tmp_path / "fair_cpu.jsonl").write_text('{"row": "cut off mid-wri')  # a killed writer's last line
    with pytest.warns(RuntimeWarning, match="not a whole record"):
        assert fair.main(["--scale", "tiny", "--rounds", "2", "--out", str(tmp_path),
                          "--rows", "planted failing row", "max pool 2x2 268MB"]) == 0
        failing, measured = _records(tmp_path)
    assert failing["row"] == "planted failing row" and failing["row_failed"]["error"] == "RuntimeError"
    assert "planted" in failing["row_failed"]["message"] and "broken" in failing["row_failed"]["frames"][-1]
    assert measured["row"] == "max pool 2x2 268MB" and measured["max_abs_error_vs_eager"]["fusegraph"] < 1e-4
    assert "Dynamo compiled no graph" in measured["eager_fallbacks"]["compile-max"]
    assert "compile-max" not in measured["median_ms"] and "compile-max" not in measured["ratios_vs_fusegraph"]
    assert measured["contender_info"]["compile"]["dynamo_graphs"] >= 1 and "compile" in measured["median_ms"]
    assert measured["failed"]["flaky"]["error"] == "StopIteration" and "flaky" not in measured["median_ms"]
    assert measured["best_torch"]["name"] in ("eager", "compile")
    table = (tmp_path / "fair_cpu.md").read_text()
    assert "**planted failing row** (float32): FAILED" in table and "compile-max not timed" in table
    assert "flaky FAILED: StopIteration" in table


def test_training_rows_check_the_losses_after_backward_and_optimizer(tmp_path, monkeypatch):
    """Steps 2 and 3 are compared too: a fusegraph optimizer off by a factor in its learning rate agrees on
    the first loss and is caught on the next ones."""
    row = "lstm h512 training step b64"
    real_sgd = harness.fg.optim.SGD
    monkeypatch.setattr(harness.fg.optim, "SGD", lambda lr, momentum: real_sgd(lr=lr * 3, momentum=momentum))
    assert fair.main(["--scale", "tiny", "--rounds", "1", "--out", str(tmp_path), "--rows", row]) == 0
    (record,) = _records(tmp_path)
    assert record["failed"]["fusegraph"]["error"] == "Disagrees" and "fusegraph" not in record["median_ms"]
    assert "ratios_vs_fusegraph" in record and "best_torch" not in record


PLANTED_SUITE = """
import os, time
from bench.suite import ROWS as REAL, Job, Row

def crash(scale, dtype="float32"):
    os.abort()

def hang(scale, dtype="float32"):
    time.sleep(600)

ROWS = {"crash": Row("crash", crash, 1), "hang": Row("hang", hang, 1),
        "max pool 2x2 268MB": REAL["max pool 2x2 268MB"]}
SUBSET, FIRST_CALL = [], []
"""


def test_isolated_jobs_survive_a_crash_and_a_hang(tmp_path, monkeypatch):
    """--isolate (the default on a GPU): a job that kills its process or outlasts its time is recorded as
    such, with its output's tail, and the next job runs."""
    (tmp_path / "planted_suite.py").write_text(textwrap.dedent(PLANTED_SUITE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(REPO), *sys.path]))
    monkeypatch.setattr(fair, "JOB_LIMIT_MARGIN_S", 3)  # the hang is killed after 2 x 1 + 3 s (a child takes ~3 s to start)
    out = tmp_path / "out"
    assert fair.main(["--scale", "tiny", "--rounds", "1", "--isolate", "--suite", "planted_suite", "--out", str(out),
                      "--rows", "crash", "hang", "max pool 2x2 268MB"]) == 0
    crashed, hung, measured = _records(out)
    assert crashed["row_failed"]["error"] == "Crash" and "SIGABRT" in crashed["row_failed"]["message"]
    assert hung["row_failed"]["error"] == "Timeout" and hung["wall_s"] >= 5
    assert measured["row"] == "max pool 2x2 268MB" and "fusegraph" in measured["median_ms"]


def test_an_append_after_a_cut_off_line_starts_a_fresh_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"row": "a"}\n{"row": "b", "wal')
    records.append(path, {"row": "c"})
    with pytest.warns(RuntimeWarning, match="r.jsonl:2"):
        assert [r["row"] for r in records.read(path)] == ["a", "c"]


def test_a_half_precision_training_row_is_mixed_precision_against_autocast(tmp_path):
    """--dtype float16 on a training row: a float32 model trained by torch's autocast + GradScaler recipe
    and by fg.compile(precision="fp16"), their losses over three steps checked against each other."""
    row = "cifar_resnet training step b128"
    assert fair.main(["--scale", "tiny", "--rounds", "1", "--out", str(tmp_path), "--rows", row,
                      "--dtype", "float16"]) == 0
    (record,) = _records(tmp_path)
    assert record["mixed_precision"] and record["dtype"] == "float16" and not record["failed"]
    assert record["max_abs_error_vs_eager"]["fusegraph"] < fair.TOLERANCE["float16"]
    assert f"**{row}** (float16 mixed precision" in (tmp_path / "fair_cpu.md").read_text()
    assert row in [job.row for job in fair.plan(suite, tmp_path / "fair_cpu.jsonl", budget=10_000)]  # fp32's


def test_first_call_latency_cold_then_warm(tmp_path):
    row = "max pool 2x2 268MB"
    assert fair.main(["--scale", "tiny", "--rounds", "1", "--out", str(tmp_path), "--rows", row, "--cold-start"]) == 0
    (record,) = _records(tmp_path)
    latency = record["first_call_cold_warm_s"]
    assert set(latency) == {"cold", "warm"} and all(latency[k]["fusegraph"] > 0 for k in latency)
    assert "first call, s: cold:" in (tmp_path / "fair_cpu.md").read_text()


def test_host_cost_per_launch_against_a_bare_triton_launch_and_eager_per_op(tmp_path):
    assert fair.main(["--scale", "tiny", "--out", str(tmp_path), "--host-cost", "lenet_digits"]) == 0
    (record,) = _records(tmp_path)
    cost = record["host_cost"]
    assert record["row"] == "host cost per launch: lenet_digits" and cost["launches_per_call"] == 5
    assert cost["eager_ops_per_call"] >= 8  # conv, relu, pool, ... as torch dispatches them
    assert cost["vs_bare_triton"] == pytest.approx(cost["fusegraph_us_per_launch"] / cost["bare_triton_us_per_launch"])
    assert cost["vs_eager_per_op"] == pytest.approx(cost["fusegraph_us_per_launch"] / cost["eager_us_per_op"])
    table = (tmp_path / "fair_cpu.md").read_text()
    assert "(goal <= 1.5x)" in table and "eager per op (goal <= 1.0x)" in table


def test_every_suite_row_builds_at_tiny_scale_and_matches_torch():
    for row in ROWS.values():
        lineup, _ = fair.contenders_for(row, "tiny", "exact")
        errors = harness.check_against_eager(lineup, tolerance=1e-4)
        assert not lineup.failed and set(errors) == {c.name for c in lineup.contenders}, (row.name, lineup.failed)


def test_stacked_rnn_rows_give_torch_one_module_with_num_layers():
    for kind in ("lstm", "gru"):
        row = ROWS[f"{kind} h512 x2 stacked b64"]
        model, feeds = row.build("tiny")
        stacked = row.torch_form(model)
        assert [m.num_layers for m in stacked.modules() if isinstance(m, torch.nn.RNNBase)] == [2]
        torch.testing.assert_close(stacked(*feeds), model.to_torch()(*feeds), rtol=0, atol=0)


def test_interleaved_rounds_rotate_and_ratios_are_per_round():
    order = []
    contenders = [harness.Contender(name, lambda name=name: order.append(name)) for name in ("fusegraph", "a", "b")]
    times = harness.interleaved(contenders, rounds=3, time_ms=lambda fn: fn() or float(len(order)))
    assert order == ["fusegraph", "a", "b", "a", "b", "fusegraph", "b", "fusegraph", "a"]
    assert times == {"fusegraph": [1.0, 6.0, 8.0], "a": [2.0, 4.0, 9.0], "b": [3.0, 5.0, 7.0]}
    ratio = harness.ratios(times)["a"]
    assert ratio == {"median": pytest.approx(9 / 8), "min": pytest.approx(4 / 6), "max": pytest.approx(2.0)}  # 2/1, 4/6, 9/8


def test_best_torch_is_the_fastest_timed_torch_contender():
    times = {"fusegraph": [2.0, 2.0, 2.0], "eager": [5.0, 6.0, 7.0], "compile": [3.0, 4.0, 3.0],
             "fusegraph-launch": [1.0, 1.0, 1.0]}
    best = harness.best_torch(times)
    assert best["name"] == "compile" and best["median_ms"] == 3.0
    assert best["ratio"] == {"median": 1.5, "min": 1.5, "max": 2.0}


def test_a_contender_that_disagrees_with_eager_is_dropped_and_recorded():
    model, feeds = ROWS["pointwise chain 256MB"].build("tiny")
    lineup = harness.forward_contenders(model, feeds, cuda=False)
    lineup.contenders.append(harness.Contender("wrong", lambda: feeds[0], results=[feeds[0]]))
    errors = harness.check_against_eager(lineup, tolerance=1e-4)
    assert "wrong" not in errors and "wrong" not in [c.name for c in lineup.contenders]
    assert lineup.failed["wrong"]["error"] == "Disagrees" and "differs from eager" in lineup.failed["wrong"]["message"]


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
    (record,) = _records(tmp_path)
    assert record["memory_format"] == "channels_last" and record["max_abs_error_vs_eager"]["fusegraph"] < 1e-4
    assert seen and all(seen)
    jsonl = tmp_path / "fair_cpu.jsonl"
    assert fair.plan(suite, jsonl, 10_000, rows=[row]) != []  # named rows always run
    assert row in [job.row for job in fair.plan(suite, jsonl, budget=10_000)]  # the contiguous row is still to run
    assert (row, "float32", "exact", "channels_last") in fair.done_jobs(jsonl)


def test_the_conv_gradient_sweep_checks_each_planted_launch_on_the_cpu(tmp_path, monkeypatch):
    """bench/tune_gpu.py's conv-gradient sweep, its machinery at a tiny shape in the interpreter (the
    GPU session that runs it cannot afford a crash): each table planted in turn, every configuration's
    gradients checked against torch.autograd, the table left as it was."""
    from bench import tune_gpu
    from fusegraph.kernels.tuning import GPU_TUNING

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
    results = {"conv_grad": []}
    tune_gpu.sweep_conv_grad(results, deadline=0.0, out=str(tmp_path))  # past its deadline: no shape starts
    assert results["conv_grad"] == []


def test_a_model_row_records_its_work_and_a_gpu_record_its_roofline(tmp_path):
    """Each model row's FLOPs and fewest bytes (ir/cost.py); on a GPU the floor they give at the measured
    ceilings and fusegraph's share of it, printed with the row (here a planted record: no GPU)."""
    row = suite.ROWS["cifar_cnn training step b128"]
    work = fair.arithmetic(row, "tiny", "float32")
    assert work["flops"] > 0 and work["minimum_bytes"] > 0
    assert fair.arithmetic(row, "tiny", "bfloat16")["minimum_bytes"] == work["minimum_bytes"] // 2
    assert fair.arithmetic(suite.ROWS["adam step 939MB"], "tiny", "float32") is None
    limits = {"copy_gb_per_s": 3000.0, "matmul_tflop_per_s": 700.0}
    roof = fair.roofline({"flops": 7e11, "minimum_bytes": 3e8}, limits, measured_ms=2.0)
    assert roof["compute_ms"] == 1.0 and roof["memory_ms"] == 0.1 and roof["bound"] == "compute"
    assert roof["fusegraph_of_floor"] == 0.5
    record = {"row": "r", "dtype": "float32", "precision": "exact", "rounds": 2, "median_ms": {"fusegraph": 2.0},
              "ratios_vs_fusegraph": {}, "left_out": {}, "work": {"flops": 7e11, "minimum_bytes": 3e8}, "roofline": roof}
    (line,) = [text for text in fair._describe(record) if "roofline" in text]
    assert "floor 1.000 ms (compute-bound" in line and "fusegraph at 50% of the limit" in line
