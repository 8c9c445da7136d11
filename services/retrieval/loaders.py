"""Files → plain text for ingestion: .txt, .md (kept as markdown: the chunker reads its headings), .html (headings
become markdown headings, blocks become paragraphs) and .pdf (pypdf's text layer, one paragraph block per page)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import BinaryIO

SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf")


class UnsupportedFile(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class SourceFile:
    path: Path
    document_id: str  # path relative to the folder given (the file's name when a file was given)


class _HtmlText(HTMLParser):
    BLOCKS = {"p", "div", "li", "br", "tr", "section", "article", "pre", "blockquote", "table", "ul", "ol"}
    SKIP = {"script", "style", "noscript", "template", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif (len(tag) == 2 and tag[0] == "h" and tag[1] in "123456") or tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(re.sub(r"\s+", " ", data))  # inline tags keep the spaces around them


def html_to_text(html: str) -> str:
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).split("\n")]
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip()


def pdf_to_text(source: Path | BinaryIO) -> str:
    from pypdf import PdfReader

    reader = PdfReader(str(source) if isinstance(source, Path) else source)
    pages = [page.extract_text() or "" for page in reader.pages]
    return "\n\n".join(p.strip() for p in pages if p.strip())


def text_from_bytes(filename: str, data: bytes) -> str:
    """An uploaded file's text, by its name's suffix (the same rules as files read from disk)."""
    suffix = Path(filename).suffix.lower()
    if suffix == ".pdf":
        return pdf_to_text(io.BytesIO(data))
    if suffix not in SUFFIXES:
        raise UnsupportedFile(f"{filename}: unsupported file type {suffix or '(none)'}; "
                              f"use one of {', '.join(SUFFIXES)}")
    text = data.decode("utf-8", errors="replace")
    return html_to_text(text) if suffix in (".html", ".htm") else text


def read_text(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        return pdf_to_text(path)
    if suffix not in SUFFIXES:
        raise UnsupportedFile(f"{path}: unsupported file type {suffix or '(none)'}")
    text = path.read_text(encoding="utf-8", errors="replace")
    return html_to_text(text) if suffix in (".html", ".htm") else text


def discover(paths: list[Path]) -> Iterator[SourceFile]:
    """Files in the order given; folders walked in sorted order, keeping the supported types."""
    for root in paths:
        if root.is_dir():
            for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES):
                yield SourceFile(path, path.relative_to(root).as_posix())
        elif root.is_file():
            yield SourceFile(root, root.name)
        else:
            raise FileNotFoundError(f"{root}: no such file or folder")
