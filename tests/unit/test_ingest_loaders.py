"""Files → text for `sluice ingest`: HTML headings become markdown headings; ids are paths relative to the folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.retrieval.loaders import UnsupportedFile, discover, html_to_text, read_text


def test_html_keeps_headings_and_paragraphs_and_drops_scripts() -> None:
    text = html_to_text("<html><head><title>t</title><script>var x=1;</script></head><body><h1>Guide</h1>"
                        "<p>First   para.</p><h2>Install</h2><p>Run <b>it</b>.</p></body></html>")
    assert text == "# Guide\n\nFirst para.\n\n## Install\n\nRun it."


def test_discover_walks_folders_sorted_with_relative_ids(tmp_path: Path) -> None:
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "b.md").write_text("# B")
    (tmp_path / "docs" / "sub" / "a.txt").write_text("a")
    (tmp_path / "docs" / "skip.py").write_text("x = 1")
    (tmp_path / "one.html").write_text("<p>x</p>")
    found = list(discover([tmp_path / "docs", tmp_path / "one.html"]))
    assert [f.document_id for f in found] == ["b.md", "sub/a.txt", "one.html"]
    with pytest.raises(FileNotFoundError):
        list(discover([tmp_path / "missing"]))
    with pytest.raises(UnsupportedFile):
        read_text(tmp_path / "docs" / "skip.py")


def test_pdf_text_layer_is_read(tmp_path: Path) -> None:
    pypdf = pytest.importorskip("pypdf")
    writer = pypdf.PdfWriter()
    writer.add_blank_page(width=200, height=200)
    path = tmp_path / "blank.pdf"
    with path.open("wb") as f:
        writer.write(f)
    assert read_text(path) == ""
