"""Dragoman's engine: speech encoder-decoder models, incremental decoding and streaming sessions."""
