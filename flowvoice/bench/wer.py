"""Word error rate of a transcript (jiwer, from the ``test`` extra), after normalising both."""

from __future__ import annotations

import re


def normalize_text(text: str) -> str:
    """Lower-case, punctuation stripped, single spaces."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def wer(ref: str, hyp: str) -> float:
    """Word error rate of ``hyp`` against ``ref`` (lower-cased, punctuation stripped)."""
    import jiwer

    ref, hyp = normalize_text(ref), normalize_text(hyp)
    if not ref:
        return 0.0 if not hyp else 1.0
    return jiwer.wer(ref, hyp) if hyp else 1.0
