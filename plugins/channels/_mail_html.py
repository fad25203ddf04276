"""
Plain text from the HTML part of an e-mail, for mail that has no ``text/plain`` part.

Tags are dropped, block elements (``<p>``, ``<div>``, ``<br>``, list items, table rows,
headings) become line breaks, character references are unescaped, and the content of
``<script>``, ``<style>``, ``<head>`` and ``<title>`` is left out. Whitespace inside a line is
collapsed as a browser would; ``<pre>`` keeps its own.

This module is not a plugin (its name starts with ``_``).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

#: Elements whose start and end break the line.
BLOCK = frozenset({
    "p", "div", "li", "ul", "ol", "tr", "table", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6",
    "section", "article", "header", "footer", "address", "dd", "dt", "dl", "hr", "pre", "center", "form",
})
#: Elements whose text is never shown.
HIDDEN = frozenset({"script", "style", "head", "title", "template", "noscript"})

_SPACES = re.compile(r"[ \t\r\n\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


class _TextCollector(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0
        self.pre = 0

    def handle_starttag(self, tag, attrs):
        if tag in HIDDEN:
            self.hidden += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag in BLOCK:
            self.parts.append("\n")
            if tag == "pre":
                self.pre += 1
        elif tag == "td" or tag == "th":
            self.parts.append(" ")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt and not self.hidden:
                self.parts.append(f" {alt} ")

    def handle_startendtag(self, tag, attrs):
        if tag in HIDDEN:
            return
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag in HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in BLOCK:
            self.parts.append("\n")
            if tag == "pre":
                self.pre = max(0, self.pre - 1)

    def handle_data(self, data):
        if self.hidden:
            return
        if self.pre:
            self.parts.append(data.replace("\r\n", "\n"))
        else:
            self.parts.append(_SPACES.sub(" ", data))


def html_to_text(html: str) -> str:
    """The readable text of an HTML document or fragment."""
    collector = _TextCollector()
    collector.feed(html)
    collector.close()
    lines = [line.strip(" ") for line in "".join(collector.parts).split("\n")]
    text = "\n".join(lines)
    return _BLANK_LINES.sub("\n\n", text).strip()
