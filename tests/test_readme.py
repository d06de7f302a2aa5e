"""What the README names exists: every zoo model and layer it lists is there under that name (and it
lists every zoo model)."""

import re
from pathlib import Path

import fusegraph as fg

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _paragraph(start: str) -> str:
    at = README.index(start)
    return README[at:README.find("\n- ", at + 1)]


def test_every_zoo_model_the_readme_lists_is_an_attribute_and_a_zoo_name():
    names = re.findall(r"`(\w+)`", _paragraph("- Zoo (`fg.zoo`)"))
    assert "lenet_digits" in names
    for name in names:
        assert hasattr(fg.zoo, name) and name in fg.zoo.MODELS, name
    assert set(fg.zoo.MODELS) <= set(names)  # and every zoo model is listed


def test_every_layer_the_readme_lists_is_exported():
    names = []
    for token in re.findall(r"`([\w/]+)`", _paragraph("- Layers:")):
        stem, _, rest = token.partition("/")
        names += [stem] + ([stem[:-2] + rest] if rest else [])
    assert "Permute" in names and "AvgPool2D" in names
    for name in names:
        assert isinstance(getattr(fg, name, None), type), name


def test_the_readme_lists_every_activation():
    from fusegraph.nn.activations import ACTIVATIONS

    assert re.findall(r"`(\w+)`", _paragraph("- Activations")) == list(ACTIVATIONS)


def test_the_readmes_links_into_the_repository_exist():
    root = Path(__file__).resolve().parents[1]
    links = re.findall(r"\]\(([^)#:]+)\)", README)
    assert "docs/ARCHITECTURE.md" in links
    for link in links:
        assert (root / link).exists(), link
