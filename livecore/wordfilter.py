"""Chat word filter: pure functions, no I/O.

Text and words are folded to one canonical form before matching, so these
all match "scam": "SCAM", "ｓｃａｍ" (NFKC), "s c a m", "s.c.a.m", "$c4m"
(look-alikes), and Arabic with diacritics (tashkeel) or tatweel stretched.
"""

from __future__ import annotations

import re
import unicodedata

DEFAULT_WORDS: tuple[str, ...] = ("scam", "fake", "fraud", "idiot", "نصب", "احتيال", "غبي")

# Latin look-alikes: digits/symbols and Cyrillic/Greek homoglyphs.
_CONFUSABLES = str.maketrans({
    "0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "@": "a", "$": "s",
    "!": "i", "|": "i", "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "х": "x", "у": "y",
    "і": "i", "ѕ": "s", "ј": "j", "к": "k", "м": "m", "т": "t", "в": "b", "н": "h",
    "α": "a", "ο": "o", "ρ": "p", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "τ": "t",
    # Arabic letter variants folded to their base letter.
    "أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا", "ى": "ي", "ة": "ه", "ؤ": "و", "ئ": "ي",
})
_ARABIC_MARKS = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0640]")
_SEPARATORS = re.compile(r"[\s\W_]+", re.UNICODE)
_LINK = re.compile(r"(https?://|www\.|\b[a-z0-9-]+\.(com|net|org|io|shop|store|ly|me|co|xyz|ru)\b)",
                   re.IGNORECASE)


def fold(text: str) -> str:
    """Canonical form: NFKC, casefold, no combining marks, look-alikes mapped."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _ARABIC_MARKS.sub("", text)
    decomposed = unicodedata.normalize("NFD", text)
    text = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return text.translate(_CONFUSABLES)


def squash(text: str) -> str:
    """Folded text with every separator removed: defeats "s c a m" and "s.c.a.m"."""
    return _SEPARATORS.sub("", fold(text))


def _collapse_repeats(text: str) -> str:
    return re.sub(r"(.)\1+", r"\1", text)


def _spans(text: str) -> list[str]:
    """The folded tokens, plus each run of single letters joined ("s c a m",
    "s.c.a.m" → "scam"). Never text glued across real words: "this camera"
    must not read as "scam"."""
    tokens = [t for t in _SEPARATORS.split(fold(text)) if t]
    spans = list(tokens)
    run: list[str] = []
    for t in [*tokens, ""]:
        if len(t) == 1:
            run.append(t)
            continue
        if len(run) > 1:
            spans.append("".join(run))
        run = []
    return spans


def find_banned(text: str, words: list[str] | tuple[str, ...]) -> str | None:
    """The first banned word found in `text`, or None."""
    spans = _spans(text)
    collapsed = [_collapse_repeats(s) for s in spans]
    whole = set(spans) | set(collapsed)
    for word in words:
        w = squash(word)
        if not w:
            continue
        cw = _collapse_repeats(w)
        if w in whole or cw in whole:
            return word
        # Inside a span ("scammers", "$c4mmer"); only for words long enough not
        # to flag innocent longer words ("class" ≠ "ass").
        if len(w) >= 4 and (any(w in s for s in spans) or any(cw in s for s in collapsed)):
            return word
    return None


def has_link(text: str) -> bool:
    return _LINK.search(fold(text)) is not None


def check(text: str, words: list[str] | tuple[str, ...], *, hold_links: bool) -> str | None:
    """Why a message should be held for review, or None to let it through."""
    word = find_banned(text, words)
    if word is not None:
        return f"word:{word}"
    if hold_links and has_link(text):
        return "link"
    return None
