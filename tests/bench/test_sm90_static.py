"""bench/sm90_static.py reads what a launch compiles to for sm_90 (no GPU): recorded as an H100 would make
it, compiled by Triton and ptxas, its MMA kind, copies, drains, resources and occupancy read off the
machine code; and what it reads of a conv holds (warpgroup MMA, no drain per kernel tap, no spill)."""

import json
import os
import pickle
import subprocess
import sys

import fusegraph as fg
from bench import sm90_static
from tests.conftest import feeds_for
from tests.kernels.test_gpu_compile import ROOT, run_as_gpu


def test_a_half_precision_conv_reads_as_warpgroup_mma_with_its_resources(tmp_path):
    x = fg.Input((32, 16, 16))  # 16384 output rows: 64-row tiles already fill the 132 SMs
    model = fg.Model(x, fg.Conv2D(64, 3, padding="same", activation="relu")(x))
    with sm90_static.recorded_launches() as records:
        run_as_gpu(model.graph, feeds_for(model, 64), model.params, memory_format="channels_last", half="float16")
    (record,) = [r for r in records if r[0].startswith("conv2d")]
    assert record[4] and all(isinstance(n, int) and n > 0 for n in record[4])  # the grid, as launched
    path = tmp_path / "records.pkl"
    path.write_bytes(pickle.dumps([record]))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    subprocess.run([sys.executable, "-m", "bench.sm90_static", "--worker", str(path)], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=600)
    (row,) = json.loads(path.with_suffix(".json").read_text())
    assert row["mma"].startswith("wgmma n") and row["copies"] == "TMA (w, x)"  # 16 x 16 maps, boxes of 8 x 16 pixels
    assert row["drains"] == 0  # one pipelined loop over every (tap, channel block) step: no drain per tap
    assert row["registers"] > 0 and row["stack"] == 0 and row["shared"] > 0
    assert 0 < row["occupancy"] <= 1 and row["waves"] > 0
    assert "| conv2d" in sm90_static.markdown({"conv64": [row]})


def test_occupancy_follows_the_cuda_rule():
    # 128 registers x 4 warps: 16384 registers a block, so 4 blocks by registers; 100 KB of shared: 2 by memory
    assert sm90_static._occupancy(128, 100 * 1024, 4, 264)["blocks_per_sm"] == 2
    assert sm90_static._occupancy(32, 0, 4, 132 * 16)["waves"] == 1.0  # 16 blocks of 4 warps fill the 64 warps


def test_the_resnet_stage_conv_compiles_hopper_native(tmp_path):
    """The Hopper issue's 256-channel ResNet stage (128 x 256 x 14 x 14, fp16 channels-last), forward and
    training: every conv launch on warpgroup MMA, the forward's and input gradient's at N = 128, the
    forward with no drain in its loop and both its operands copied by TMA, nothing spilled."""
    records = list({r[:4]: r for r in sm90_static.record_case("conv256")}.values())
    convs = [r for r in records if r[0].startswith("conv2d")]
    path = tmp_path / "records.pkl"
    path.write_bytes(pickle.dumps(convs))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    subprocess.run([sys.executable, "-m", "bench.sm90_static", "--worker", str(path)], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=900)
    rows = json.loads(path.with_suffix(".json").read_text())
    assert len(rows) == len(convs) >= 4
    for row in rows:
        assert row["mma"].startswith("wgmma n") and row["stack"] == 0, row
        if row["kernel"].startswith("conv2d_bwd_input") or not row["kernel"].startswith("conv2d_bwd"):
            assert row["blocks"]["BLOCK_M"] >= 64
        if row["kernel"] == "conv2d":  # its 14 x 14 maps in boxes of 32 images' 2 x 2 pixels, by TMA
            assert row["mma"] == "wgmma n128" and row["drains"] == 0 and row["copies"] == "TMA (w, x)"
        if row["kernel"] == "conv2d_bwd_input":  # the packed filters by TMA (dy: the loss's NCHW gradient)
            assert row["copies"].startswith("TMA (w")
