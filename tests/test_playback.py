"""The playback ledger maps played time back onto the words the user heard."""

from __future__ import annotations

from flowvoice.conversation.playback import PlaybackLedger


def ledger_with_two_sentences() -> PlaybackLedger:
    ledger = PlaybackLedger()
    ledger.begin_sentence(3, "The capital of France is Paris.")  # 6 words, 2 s
    ledger.add_audio(3, 1.0)
    ledger.add_audio(3, 1.0)
    ledger.begin_sentence(3, "It is a big city.")  # 5 words, 1 s
    ledger.add_audio(3, 1.0)
    ledger.sent(3, 3.0)
    return ledger


def test_client_report_cuts_within_a_sentence_by_words():
    ledger = ledger_with_two_sentences()
    ledger.played(3, 1.0)
    assert ledger.heard_text(3) == ("The capital of", False)
    ledger.played(3, 2.4)
    assert ledger.heard_text(3) == ("The capital of France is Paris. It is", False)
    ledger.played(3, 3.0)
    assert ledger.heard_text(3) == ("The capital of France is Paris. It is a big city.", True)


def test_without_reports_playback_is_estimated_in_real_time():
    ledger = ledger_with_two_sentences()
    started = ledger._turns[3].first_sent_at
    assert started is not None
    assert ledger.is_playing(3, now=started + 1.0)
    assert ledger.heard_text(3, now=started + 2.0) == ("The capital of France is Paris.", False)
    assert not ledger.is_playing(3, now=started + 10)


def test_a_gap_in_sending_stalls_the_estimate():
    """Audio sent after a pause in synthesis plays from when it arrives: the reply is still
    playing (and heard only in part) until the late audio has had its time."""
    ledger = PlaybackLedger()
    ledger.begin_sentence(5, "One two three four.")
    ledger.add_audio(5, 1.0)
    ledger.sent(5, 1.0)
    first = ledger._turns[5].plays_until
    assert first is not None
    ledger._turns[5].plays_until = first - 3.0  # sent 3 s ago: played, then 2 s of silence
    ledger.begin_sentence(5, "Five six seven eight.")
    ledger.add_audio(5, 2.0)
    ledger.sent(5, 2.0)  # arrives now, after the gap
    late = ledger._turns[5].plays_until
    assert late is not None
    assert ledger.is_playing(5, now=late - 1.0)
    assert ledger.heard_text(5, now=late - 1.0) == ("One two three four. Five six", False)
    assert not ledger.is_playing(5, now=late + 0.01)


def test_played_never_exceeds_what_was_sent():
    ledger = PlaybackLedger()
    ledger.begin_sentence(1, "one two three four")
    ledger.add_audio(1, 2.0)
    ledger.sent(1, 1.0)
    ledger.played(1, 5.0)
    assert ledger.heard_text(1) == ("one two", False)
    assert ledger.heard_text(99) == ("", False)
