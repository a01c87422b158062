"""Markdown as a reader sees it: the text the claim check reads (SPEC.md section 7.2).

A card says `**post**-**trained**`, `post&#8209;trained`, `post\u200b-trained` or `[post](x)-trained`; every one
renders as "post-trained". The check must read what is rendered, not the source, or emphasis defeats it.
"""

from __future__ import annotations

import html
import re
import unicodedata

_COMMENT = re.compile(r"<!--.*?-->", re.S)
_TAG = re.compile(r"</?[A-Za-z][^<>]*>|<[a-z][a-z0-9+.-]*:[^<>\s]*>", re.I)
_IMAGE_OR_LINK = re.compile(r"!?\[([^\[\]]*)\](?:\([^()]*\)|\[[^\[\]]*\])")
_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
_EMPHASIS = re.compile(r"[*_~`]+")
MAX_ROUNDS = 8
"""Entities that spell markup that spells entities: each round undoes one layer; real text needs one or two."""


def _unicode(text: str) -> str:
    """NFKC (full-width and compatibility forms), format characters (zero-width, soft hyphen, bidi controls) dropped,
    every dash a hyphen-minus and every space a space."""
    out = []
    for c in unicodedata.normalize("NFKC", text):
        cat = unicodedata.category(c)
        if cat == "Cf" or 0xFE00 <= ord(c) <= 0xFE0F:
            continue
        out.append("-" if cat == "Pd" or c == "\u2212" else " " if cat == "Zs" else c)
    return "".join(out)


def _one_round(text: str) -> str:
    text = html.unescape(text)
    text = _COMMENT.sub("", text)
    text = _TAG.sub("", text)
    text = _unicode(text)
    text = _IMAGE_OR_LINK.sub(r"\1", text)
    text = _ESCAPE.sub(r"\1", text)
    return _EMPHASIS.sub("", text)


def plain_text(markdown: str) -> str:
    """The rendered words of a markdown body: entities decoded, comments, tags, emphasis and link targets dropped,
    Unicode normalised; repeated until nothing changes (bounded)."""
    text = markdown
    for _ in range(MAX_ROUNDS):
        nxt = _one_round(text)
        if nxt == text:
            break
        text = nxt
    return text
