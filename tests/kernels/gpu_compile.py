"""Compiles recorded kernel launches for an sm_90 GPU, with no GPU: Triton's own compiler and the
ptxas it ships. Run as a separate process (`python -m tests.kernels.gpu_compile LAUNCHES.pkl`)
because the test process interprets kernels (its kernels are defined interpreted, and the interpreter
patches triton.language).

Each record: (kernel name, module source, [(kind, type, 16-divisible)] per positional argument (kind "pointer",
"scalar", "descriptor" for a TMA tensor descriptor, "one" or "none" for the constants the launcher makes of a 1
or a None), constexpr and launch keyword arguments). Prints one line per failure: a kernel that does not compile, whose tl.dot
compiled to no tensor-core instruction (no `mma` in its PTX), with `--pipelined`, one launched with
num_stages > 1 whose loads are not pipelined (no asynchronous copy, `cp.async`, in its PTX: loads
from addresses not known to be aligned and contiguous, or a K loop of one step, cannot be), or that spills more than
MAX_STACK_BYTES of registers to the stack per thread (cuobjdump's resource usage); exits 1 if any."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pickle
import sys
import tempfile

POINTER_TYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "int64": "i64", "int32": "i32",
                 "int8": "i8", "uint8": "u8"}
LAUNCH_OPTIONS = ("num_warps", "num_stages")
# the RNN step launches tuned on the H200 (bench/results/tune_cuda.md) keep up to 40 bytes
MAX_STACK_BYTES = 64


def resource_usage(cubin: bytes, folder: str) -> dict[str, int]:
    """Registers, stack and shared memory per thread / block, as cuobjdump (Triton's own) reports them."""
    import re
    import subprocess

    import triton

    path = os.path.join(folder, "kernel.cubin")
    with open(path, "wb") as handle:
        handle.write(cubin)
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    usage = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True, check=True).stdout
    found = {key: re.search(rf"{key}:(\d+)", usage) for key in ("REG", "STACK", "SHARED")}
    return {name: int(found[key].group(1)) if found[key] else 0
            for name, key in (("registers", "REG"), ("stack", "STACK"), ("shared", "SHARED"))}


def load(name: str, source: str, folder: str):
    path = os.path.join(folder, f"{name}_{abs(hash(source))}.py")
    with open(path, "w") as handle:
        handle.write(source)
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # NOTE: Triton reads the function's source back through its module
    spec.loader.exec_module(module)
    return getattr(module, name)


def launch_options(fn, arguments, keywords: dict) -> tuple[dict, dict, dict, dict]:
    """(signature, attrs, constexprs, launch options) of a recorded launch, as Triton's launcher would
    specialize it."""
    signature = {arg: ("*" + POINTER_TYPES[t] if kind == "pointer" else t)
                 for arg, (kind, t, _) in zip(fn.arg_names, arguments) if kind not in ("one", "none")}
    # NOTE: as the launcher specializes them: loads vectorize and pipeline only from aligned addresses
    attrs = {(i,): [["tt.divisibility", 16]] for i, (_, _, aligned) in enumerate(arguments) if aligned}
    options = {k: v for k, v in keywords.items() if k in LAUNCH_OPTIONS}
    constexprs = {k: v for k, v in keywords.items() if k not in LAUNCH_OPTIONS}
    constexprs.update({arg: 1 for arg, (kind, _, _) in zip(fn.arg_names, arguments) if kind == "one"})
    constexprs.update({arg: None for arg, (kind, _, _) in zip(fn.arg_names, arguments) if kind == "none"})
    signature.update({k: "constexpr" for k in constexprs})
    return signature, attrs, constexprs, options


def compile_for_sm90(fn, arguments, keywords: dict) -> tuple:
    """(constexprs, launch options, the compiled kernel or the compiler's error): one recorded launch of `fn`
    (loaded by `load`) built for sm_90."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, attrs, constexprs, options = launch_options(fn, arguments, keywords)
    try:
        return constexprs, options, triton.compile(ASTSource(fn, signature, constexprs, attrs),
                                                   target=GPUTarget("cuda", 90, 32), options=options)
    except Exception as error:  # noqa: BLE001 - every compiler error is the caller's to report
        return constexprs, options, error


def compile_one(record, pipelined: bool, folder: str) -> list[str]:
    """The failures of one recorded launch (none: it compiles, on tensor cores, pipelined if asked, without
    spilling)."""
    name, source, arguments, keywords = record
    constexprs, options, compiled = compile_for_sm90(load(name, source, folder), arguments, keywords)
    if isinstance(compiled, Exception):
        return [f"{name} {constexprs} {options}: {type(compiled).__name__}: {str(compiled)[:500]}"]
    failures = []
    if "tl.dot(" in source and "mma" not in compiled.asm["ptx"]:
        failures.append(f"{name} {constexprs} {options}: its tl.dot uses no tensor cores")
    stages = options.get("num_stages", 1)
    if pipelined and "tl.dot(" in source and stages > 1 and "cp.async" not in compiled.asm["ptx"]:
        failures.append(f"{name} {constexprs} {options}: num_stages > 1 but no load is pipelined (no cp.async)")
    spilled = resource_usage(compiled.asm["cubin"], folder)["stack"]
    if spilled > MAX_STACK_BYTES:
        failures.append(f"{name} {constexprs} {options}: spills {spilled} bytes of stack per thread")
    return failures


def verdict_key(record, pipelined: bool) -> str:
    """What decides a launch's verdict: its source, argument specialization, constexprs and options, the check
    asked for and the compiler."""
    import triton

    name, source, arguments, keywords = record
    text = repr((name, source, [tuple(a) for a in arguments], sorted(keywords.items()), pipelined, triton.__version__,
                 MAX_STACK_BYTES))
    return hashlib.sha256(text.encode()).hexdigest()


def _compile_in_worker(args) -> list[str]:
    record, pipelined = args
    return compile_one(record, pipelined, tempfile.mkdtemp(prefix="fusegraph-gpu-compile-"))


def compile_all(records, pipelined: bool = False, verdicts: str | None = None, workers: int = 1) -> list[str]:
    """Every record's failures. With `verdicts` (a folder shared by a test run), a launch already judged
    there is not compiled again; the others compile in `workers` processes."""
    keys = [verdict_key(record, pipelined) for record in records]
    known: dict[str, list[str]] = {}
    if verdicts:
        for key in keys:
            path = os.path.join(verdicts, key + ".json")
            if os.path.exists(path):
                with open(path) as handle:
                    known[key] = json.load(handle)
    todo = {key: record for key, record in zip(keys, records) if key not in known}
    jobs = [(record, pipelined) for record in todo.values()]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(min(workers, len(jobs))) as pool:
            results = pool.map(_compile_in_worker, jobs, chunksize=1)
    else:
        results = [_compile_in_worker(job) for job in jobs]
    for key, failures in zip(todo, results, strict=True):
        known[key] = failures
        if verdicts:
            os.makedirs(verdicts, exist_ok=True)
            partial = os.path.join(verdicts, f"{key}.{os.getpid()}.tmp")
            with open(partial, "w") as handle:
                json.dump(failures, handle)
            os.replace(partial, os.path.join(verdicts, key + ".json"))  # NOTE: whole or absent, never torn
    return [line for key in dict.fromkeys(keys) for line in known[key]]


if __name__ == "__main__":
    os.environ.pop("TRITON_INTERPRET", None)
    with open(sys.argv[1], "rb") as handle:
        records = pickle.load(handle)
    verdicts = os.environ.get("FUSEGRAPH_SM90_VERDICTS")
    failures = compile_all(records, pipelined="--pipelined" in sys.argv[2:], verdicts=verdicts,
                           workers=len(os.sched_getaffinity(0)))
    for line in failures:
        print("FAILED", line)
    print(f"compiled {len(records) - len(failures)} of {len(records)} kernels for sm_90")
    sys.exit(1 if failures else 0)
