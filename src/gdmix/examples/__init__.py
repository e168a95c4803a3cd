"""Worked examples shipped with gdmix (the MovieLens-100K job)."""
