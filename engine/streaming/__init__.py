"""The streaming core: one live stream from audio to Commit/Partial events, sans I/O.

  config.py      SessionConfig: the user-facing knobs (strings stay strings here)
  session.py     StreamingSession: the coordinator and the one protocol the scheduler drives
  mailbox.py     audio in from the I/O thread (validated, resampled to 16 kHz), events out to it
  segmenter.py   VAD segmentation: speech segments between pauses (vad.py: Silero per stream)
  segment.py     a segment's state, and the units of model work handed to the scheduler
  modes.py       incremental / exact / redecode: how a decoder job reuses the cache
  prompt.py      a segment's start tokens: task, language, vocabulary and the previous committed text
  decoder.py     one greedy/beam decoder update over a DecoderState; batch.py: several streams per step
  language_id.py the spoken-language guess from the first speech
  guards.py      hallucination guards: repetition loops, re-read audio, prompt echoes, drift, non-speech
  drift.py       telling a translation written out in the spoken language instead
  repeats.py     the duplicate guard: decoded words that only repeat committed text are not shown again
  policy.py      which generated tokens are stable (AlignAtt, LocalAgreement; no torch)
  committer.py   what is committed and what stays partial: boundaries, UTF-8, spacing, timing
  trim.py        dropping committed audio from a long window's front

Nothing here imports the app; nothing below (models, core modules) imports this package.
"""
