"""Characters that must not reach a reader unseen: control characters, bidirectional overrides, invisible marks.

A title with U+202E (right-to-left override) can show a different text from the one signed; ESC
in a commit message can rewrite a terminal; a C0 control makes an Atom feed ill-formed XML. The
rules refuse them in instructions; every output that prints text from the ledger or git passes it
through the function for its medium.
"""

from __future__ import annotations

import re

# C0 and C1 controls and DEL; the bidirectional embeddings, overrides and isolates; the
# zero-width and invisible format characters.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\ufff9-\ufffb]"
)
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")


def unsafe_characters(text: str, allow_newlines: bool = False) -> list[str]:
    """The unsafe characters in `text`, as U+XXXX names, in order (newlines allowed when asked)."""
    found = []
    for match in _UNSAFE.finditer(text):
        char = match.group()
        if allow_newlines and char == "\n":
            continue
        name = f"U+{ord(char):04X}"
        if name not in found:
            found.append(name)
    return found


def _shown(match: re.Match[str]) -> str:
    char = match.group()
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def for_terminal(text: str) -> str:
    """Text to print on one terminal line: every unsafe character (newlines too) shown as an escape."""
    return _UNSAFE.sub(_shown, text)


def for_xml(text: str) -> str:
    """Text that XML 1.0 can hold: characters it forbids shown as escapes, bidi controls too."""
    kept = _UNSAFE.sub(lambda m: m.group() if m.group() in "\n\r\t" else _shown(m), text)
    return _XML_FORBIDDEN.sub(_shown, kept)


def for_markdown(text: str) -> str:
    """Inline Markdown text: unsafe characters escaped, newlines folded, markup characters taken literally."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", for_terminal(text.replace("\n", " ")))
