"""What the `fusegraph` command's subcommands do: fusegraph/cli.py parses their arguments without torch,
then calls these. A MODEL on the command line is a zoo name or path/to/file.py:attr (`load_model`)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path

import torch

from .checks import compare, sample_inputs
from .ir import FusegraphError, GraphError
from .nn import Model, zoo
from .nn.torch_module import TorchModel


class ModelFileError(FusegraphError):
    """An exception raised by the code in a user's model file."""


@contextlib.contextmanager
def user_code(file: Path):
    """Turns an exception in `file`'s code into one ModelFileError naming the file and line it came from."""
    try:
        yield
    except FusegraphError:
        raise
    except (Exception, SystemExit) as error:  # noqa: BLE001  (anything the user's code raises)
        frames = traceback.extract_tb(error.__traceback__)
        mine = [f for f in frames if Path(f.filename).resolve() == file.resolve()] or frames[-1:]
        where = f"{mine[-1].filename}:{mine[-1].lineno}" if mine else str(file)
        detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if isinstance(error, SyntaxError) and error.lineno:
            where, detail = f"{error.filename}:{error.lineno}", f"SyntaxError: {error.msg}"
        raise ModelFileError(f"{where}: {detail}") from None


def load_model(spec: str) -> Model:
    """A zoo name, or `path/to/file.py:attr` where attr is a Model or a function returning one."""
    model, _ = load_validated(spec)
    return model


def load_validated(spec: str) -> tuple[Model, torch.nn.Module]:
    """(the Model, the torch module it must compute what computes): a zoo name or `path/to/file.py:attr`,
    attr a fusegraph Model (checked against its to_torch()), or a function returning one or returning
    (torch.nn.Module, example inputs), imported with fg.from_torch and checked against that module."""
    if ":" not in spec:
        model = zoo.get(spec)
        return model, model.to_torch()
    path, _, attr = spec.rpartition(":")
    file = Path(path)
    if not file.is_file():
        raise GraphError(f"model file {path!r} does not exist; use path/to/file.py:attr or one of {', '.join(zoo.MODELS)}")
    module_spec = importlib.util.spec_from_file_location(file.stem, file)
    if module_spec is None or module_spec.loader is None:
        raise GraphError(f"{path} is not a Python file fusegraph can load; give path/to/file.py:attr")
    module = importlib.util.module_from_spec(module_spec)
    with user_code(file):
        module_spec.loader.exec_module(module)
    if not hasattr(module, attr):
        raise GraphError(f"{path} has no attribute {attr!r}")
    model = getattr(module, attr)
    if callable(model) and not isinstance(model, Model):
        with user_code(file):
            model = model()
    if _is_torch_pair(model):
        import copy

        from .interop import from_torch

        module, examples = model
        return from_torch(module, examples), copy.deepcopy(module).eval()
    if not isinstance(model, Model):
        raise GraphError(f"{spec} is a {type(model).__name__}, not a fusegraph Model (nor a function returning one, "
                         "or returning a torch.nn.Module with its example inputs)")
    return model, model.to_torch()


def _is_torch_pair(value) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], torch.nn.Module)


def cmd_show(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    if args.graph:
        from .ir.draw import before_after_dot, render
        from .runtime import compile

        compiled = compile(model)
        _, note = render(before_after_dot(model.graph, compiled.graph), args.output)
        print(note)
        return 0
    print(model.graph)
    print()
    model.summary()
    if args.explain:
        from .runtime import compile

        print()
        print(compile(model, loss=args.loss).explain(batch=args.batch))
    if args.kernels:
        from .runtime import compile

        compiled = compile(model, fuse=not args.unfused)
        seen: set[str] = set()
        print(f"\n{len(compiled.kernels)} kernels ({compiled.device}); each distinct source once:")
        for node_kernel, source in zip(compiled.program.kernels, compiled.kernels):
            print(f"# {node_kernel.node.where} -> {node_kernel.kernel.name}")
            if source not in seen:
                seen.add(source)
                print(source)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .runtime import compile

    model, reference = load_validated(args.model)
    compiled = compile(model)
    feeds = [f.to(compiled.device) for f in sample_inputs(model, args.batch, args.seed)]
    ours = compiled(feeds)
    with torch.no_grad():
        theirs = reference.to(compiled.device)(*feeds)
    ok = True
    against = "to_torch()" if isinstance(reference, TorchModel) else f"the torch module ({type(reference).__name__})"
    print(f"{args.model}: {compiled.last_launches} kernel launches on {compiled.device}, batch {args.batch}, "
          f"against {against}")
    for i, (abs_err, rel_err, passed) in enumerate(compare(ours, theirs, args.rtol, args.atol)):
        ok &= passed
        print(f"  output {i}: max abs error {abs_err:.3e}  max rel error {rel_err:.3e}  {'PASS' if passed else 'FAIL'}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from . import demo
    from .runtime.device import select_device

    out = Path(args.out)
    if args.augment and args.task not in ("digits", "mnist"):
        raise GraphError(f"--augment shifts digit images: it does not apply to --task {args.task}")
    print(f"fusegraph demo ({args.task}): fusegraph's own fused Triton kernels, forward and backward.\n")
    if args.task == "timeseries":
        if args.model not in (None, "cnn1d", "gru"):
            raise GraphError(f"--model {args.model} is a sentiment model; the timeseries demo takes cnn1d or gru")
        result = demo.timeseries(out, series=args.series, epochs=args.epochs or 40, model_name=args.model or "cnn1d")
    elif args.task in ("digits", "mnist"):
        if args.model is not None:
            raise GraphError(f"--model {args.model} does not apply to --task {args.task}: it trains LeNet")
        bar = 0.95
        if args.task == "digits":
            result = demo.digits(out, epochs=args.epochs or 10, augment=args.augment)
        else:  # on a GPU the full recipe (8 epochs, shifted images; bar 97%); the interpreter's fits in minutes
            on_gpu = select_device() == "cuda"
            bar = 0.97 if on_gpu else 0.95
            result = demo.mnist(out, epochs=args.epochs or (8 if on_gpu else 4),
                                augment=args.augment or (on_gpu and args.epochs is None))
        reached = result["accuracy"] >= bar
        print(f"held-out accuracy {result['accuracy']:.2%}: " + (f"the full run's bar of {bar:.0%} reached" if reached
              else f"under the full run's {bar:.0%} (a shortened --epochs run may stop short of it; tests/test_demo.py "
              "holds the bar)"))
    else:
        if args.model is not None and (args.task != "sentiment" or args.model not in ("lstm", "bigru")):
            raise GraphError(f"--model {args.model} does not apply to --task {args.task} (sentiment: lstm or bigru; "
                             "timeseries: cnn1d or gru)")
        extra = {"rnn": args.model} if args.model else {}
        result = getattr(demo, args.task)(out, **({"epochs": args.epochs} if args.epochs else {}), **extra)
    print("\nfiles written:")
    for path in result["files"]:
        print(f"  {Path(path).resolve()}")
    return 0  # NOTE: a run that finished is a success; the accuracy bars belong to the tests


def cmd_train(args: argparse.Namespace) -> int:
    """Under torchrun (WORLD_SIZE in the environment) every rank runs this: data parallel over a process
    group it starts (gloo on CPUs, NCCL on GPUs), rank 0 alone printing and writing the output."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            if torch.cuda.is_available():  # a rank per GPU of its node
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        try:
            status = _train(args, distributed=True, lead=dist.get_rank() == 0)
            dist.barrier()  # every rank done with its last collective before any tears the group down
            return status
        finally:
            dist.destroy_process_group()
    if args.shard_optimizer:
        raise GraphError("--shard-optimizer shards a distributed run's optimizer state: launch with "
                         "torchrun --nproc-per-node=N -m fusegraph train ...")
    return _train(args, distributed=False, lead=True)


def _train(args: argparse.Namespace, distributed: bool, lead: bool) -> int:
    from . import data, optim
    from .runtime import compile

    say = print if lead else (lambda *_, **__: None)
    model = load_model(args.model)
    if args.data in ("digits", "mnist"):
        x_train, y_train, x_test, y_test = getattr(data, args.data)(seed=args.seed)
        loss = args.loss or "cross_entropy"
        what = "8x8 digit images" if args.data == "digits" else "28x28 MNIST digit images"
        if model.input_shape != tuple(x_train.shape[1:]):
            raise GraphError(f"{args.model} takes inputs of shape {model.input_shape}, but --data {args.data}'s images "
                             f"are {tuple(x_train.shape[1:])}: give a model for them (the zoo's "
                             f"{'lenet_digits' if args.data == 'digits' else 'lenet'}, or Input({tuple(x_train.shape[1:])}))")
    else:
        window, layout = series_layout(model, args.model)
        if args.window is not None and args.window != window:
            raise GraphError(f"{args.model} takes windows of {window} steps (input shape {model.input_shape}), "
                             f"but --window is {args.window}; build the model for {args.window} steps or drop --window")
        x_train, y_train, x_test, y_test, _ = data.windows(data.series(args.data), window)
        x_train, x_test = layout(x_train), layout(x_test)
        loss = args.loss or "mse"
        what = f"windows of {window} steps of the {args.data} series, shaped {tuple(x_train.shape[1:])}"
    ranks = f", data parallel over {os.environ['WORLD_SIZE']} ranks (batch {args.batch_size} each)" if distributed else ""
    say(f"training {args.model} ({model.count_params():,} parameters) on {args.data}: {len(x_train)} training and "
        f"{len(x_test)} held-out {what}; loss {args.loss or loss}, optimizer {args.optimizer}{ranks}")
    kind = {"adam": optim.Adam, "adamw": optim.AdamW, "adamax": optim.Adamax, "nadam": optim.NAdam, "sgd": optim.SGD,
            "rmsprop": optim.RMSprop, "adagrad": optim.Adagrad, "adadelta": optim.Adadelta}[args.optimizer]
    optimizer = kind(lr=args.lr) if args.lr else kind()
    trainer = compile(model, loss=loss, optimizer=optimizer, distributed=distributed,
                      shard_optimizer=args.shard_optimizer)
    history = trainer.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                          validation_data=(x_test, y_test), checkpoint=args.output)
    say("held-out:", ", ".join(f"{k} {v:.4f}" for k, v in trainer.evaluate(x_test, y_test).items()))
    if args.output:
        say(f"saved the trainer (weights, optimizer state, history) to {args.output}: fg.load({str(args.output)!r})")
    return 0 if history["loss"] else 1


def series_layout(model: Model, spec: str):
    """(window, how to shape data.windows' (N, window, 1) for the model): a univariate series feeds
    Input((window,)) as (N, window), a Conv1D's Input((1, window)) as (N, 1, window), an RNN's
    Input((window, 1)) as (N, window, 1)."""
    shape = model.input_shape
    if isinstance(shape, list):
        raise GraphError(f"{spec} has {len(shape)} inputs; training on a series takes a single-input model")
    if len(shape) == 1:
        return shape[0], lambda x: x[..., 0]
    if len(shape) == 2 and shape[0] == 1:
        return shape[1], lambda x: x.transpose(1, 2).contiguous()
    if len(shape) == 2 and shape[1] == 1:
        return shape[0], lambda x: x
    raise GraphError(f"{spec} takes inputs of shape {shape}; a univariate series needs Input((window,)), "
                     "Input((1, window)) for a Conv1D model or Input((window, 1)) for an RNN")


def cmd_tune(args: argparse.Namespace) -> int:
    """The GPU launch sweeps (bench/tune_gpu.py); they write tables to commit into the repository's
    GPU_TUNING, so they run from a source checkout, not an installed package."""
    sys.path.insert(0, str(Path.cwd()))
    try:
        from bench import tune_gpu
    except ImportError:
        raise FusegraphError("fusegraph tune runs from a fusegraph source checkout (it needs bench/tune_gpu.py, "
                             "and what it measures goes into the repository's tuning table); cd into one") from None
    finally:
        sys.path.pop(0)
    return tune_gpu.main(args.sweep_args)
