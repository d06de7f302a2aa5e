"""bench/cpu_interpreter.py at a small batch: fusegraph checked against torch before anything is timed,
interleaved rounds, the ratio per round (its times here are whatever this machine gives)."""

import json

from bench import cpu_interpreter


def test_the_interpreter_benchmark_checks_then_times_both_sides(tmp_path):
    assert cpu_interpreter.main(["--rounds", "2", "--batch", "4", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "cpu_interpreter.json").read_text())
    checks, timed = results["checks"], results["timings"]
    assert checks["forward_max_rel_error"] < 1e-4 and checks["gradient_max_rel_error"] < 1e-4
    assert checks["loss_max_rel_error"] < 1e-4
    for what in ("forward", "step"):
        ratio = timed[f"{what} ratio"]
        assert ratio["min"] <= ratio["median"] <= ratio["max"] and timed[f"fusegraph {what}"]["median_s"] > 0
    assert "| step |" in (tmp_path / "cpu_interpreter.md").read_text()
