"""The published model code of torchvision and timm, for the tests that convert it unmodified.

torchvision's wheel on these machines is a CUDA build whose C extension does not load beside the CPU
torch, and `import torchvision` fails on it; its model code is plain Python. So both packages are
installed apart from site-packages (`pip install --no-deps --target .published torchvision==0.28.0
timm==1.0.29`, as the README's test command does), and torchvision's packages are entered without their
`__init__`, which loads the extension. Where torchvision imports as it is (a GPU machine), it is used so."""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = "pip install --no-deps --target .published torchvision==0.28.0 timm==1.0.29"


def _folder() -> Path | None:
    given = os.environ.get("FUSEGRAPH_PUBLISHED")
    for folder in ([Path(given)] if given else []) + [ROOT / ".published"]:
        if (folder / "torchvision" / "models").is_dir() and (folder / "timm").is_dir():
            return folder
    return None


def _enter_without_init(folder: Path) -> None:
    """torchvision and torchvision.models as bare packages: their modules import, their __init__ never runs."""
    for name, path in (("torchvision", folder / "torchvision"), ("torchvision.models", folder / "torchvision" / "models")):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(path)]
            sys.modules[name] = package


def load(name: str) -> types.ModuleType:
    """torchvision.models.<name> (name 'timm': the timm package). Where neither is installed the test fails
    saying how to install them: the README's test command does, so a run that lacks them has lost the
    published-model coverage and must not pass quietly. FUSEGRAPH_SKIP_PUBLISHED=1 skips them instead, for
    a machine that asks to run without them."""
    folder = _folder()
    if folder is not None:
        if str(folder) not in sys.path:
            sys.path.append(str(folder))
        _enter_without_init(folder)
    elif "torchvision" not in sys.modules:
        try:
            importlib.import_module("torchvision.models")
        except Exception:  # noqa: BLE001 - a missing or broken torchvision alike
            missing = f"torchvision's and timm's model code are not installed: {INSTALL}"
            if os.environ.get("FUSEGRAPH_SKIP_PUBLISHED") == "1":
                pytest.skip(f"FUSEGRAPH_SKIP_PUBLISHED=1 asks to run without the published models ({missing})")
            pytest.fail(missing, pytrace=False)
    return importlib.import_module("timm" if name == "timm" else f"torchvision.models.{name}")
