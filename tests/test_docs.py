"""The docs do not drift: every measured number in them is the one scripts/doc_numbers.py stored
in docs/numbers.json, and the command list of docs/cli.md names every command."""

from __future__ import annotations

import importlib.util
import json

from conftest import REPO

from simprec.cli import commands


def _doc_numbers():
    spec = importlib.util.spec_from_file_location("doc_numbers", REPO / "scripts" /
                                                  "doc_numbers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_docs_quote_the_measured_numbers():
    assert _doc_numbers().differences() == []


def test_every_measured_number_is_quoted_and_every_quote_measured():
    d = _doc_numbers()
    values = d.load_numbers()["values"]
    quoted = set()
    for doc in d.DOCS:
        text = (REPO / doc).read_text()
        quoted |= {m.group(1) for m in d.INLINE.finditer(text)}
        quoted |= {m.group(1) for line in text.split("\n") if (m := d.BLOCK.match(line))}
    assert quoted <= set(values)
    assert quoted, "no marked numbers: the docs' numbers would be typed by hand"


def test_a_drifted_number_is_caught():
    d = _doc_numbers()
    numbers = json.loads(d.NUMBERS.read_text())
    numbers["values"]["train.accuracy"] = "12.34 %"
    problems = d.differences(numbers)
    assert any("cli.md" in p or "guide.md" in p for p in problems), problems


def test_render_replaces_inline_values_and_fenced_blocks():
    d = _doc_numbers()
    text = ("Takes <!--n:t-->1 s<!--/n--> here.\n\n<!--n:b-->\n```\nold\nlines\n```\n\n"
            "<!--n:tab-->\n| a |\n|---|\n| 1 |\n\nafter")
    new, unknown = d.render(text, {"t": "2 s", "b": "new", "tab": "| a |\n|---|\n| 2 |"})
    assert unknown == []
    assert new == ("Takes <!--n:t-->2 s<!--/n--> here.\n\n<!--n:b-->\n```\nnew\n```\n\n"
                   "<!--n:tab-->\n| a |\n|---|\n| 2 |\n\nafter")


def test_cli_md_lists_every_command():
    text = (REPO / "docs" / "cli.md").read_text()
    listed = text.split("```", 2)[1]  # the first block: the command list
    for name in commands():
        assert f"simprec {name}" in listed, name
