"""LanguageId: a stream's language is not fixed on a short, unsure look, and a wrong choice is revised."""

from engine.streaming.language_id import LanguageId


def test_unsure_short_looks_do_not_decide():
    """One or two seconds that lean to the wrong language only give the guess; the segment's end decides."""
    lid = LanguageId()
    assert lid.observe({"en": 0.49, "de": 0.13, "la": 0.38}, 1.1, final=False) == ("en", False)
    assert lid.observe({"en": 0.59, "de": 0.20, "la": 0.21}, 2.1, final=False) == ("en", False)
    assert not lid.decided and lid.guess == "en"
    assert lid.observe({"de": 0.99, "en": 0.01}, 4.2, final=True) == ("de", True)
    assert lid.decided and lid.language == "de"


def test_sure_or_long_looks_decide_early():
    lid = LanguageId()
    assert lid.observe({"de": 0.97, "en": 0.03}, 1.1, final=False) == ("de", True)
    lid = LanguageId()
    assert lid.observe({"fr": 0.97, "en": 0.03}, 0.6, final=False) == ("fr", False)  # too short to trust
    lid = LanguageId()
    assert lid.observe({"fr": 0.65, "en": 0.35}, 6.5, final=False) == ("fr", True)  # a long unbroken segment


def test_a_decided_language_is_revised_only_by_a_clear_whole_segment():
    lid = LanguageId()
    lid.observe({"en": 0.99, "de": 0.01}, 2.0, final=False)
    assert lid.language == "en"
    # updates inside a segment never switch
    assert lid.observe({"de": 0.99, "en": 0.01}, 3.0, final=False) == ("en", False)
    # a whole segment that is only somewhat sure of another language does not switch either
    assert lid.observe({"de": 0.6, "en": 0.4}, 3.0, final=True) == ("en", False)
    # one that clearly says another language does
    assert lid.observe({"de": 0.9, "en": 0.05, "nl": 0.05}, 3.0, final=True) == ("de", True)
    assert lid.language == "de"
