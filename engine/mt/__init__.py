"""Text machine translation after the speech model: MarianMT and M2M100 / NLLB-200, a streaming policy over the
committed source text, and the cascade that picks a pivot (docs/mt.md)."""
