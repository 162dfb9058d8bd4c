"""Composer glue: trainer construction, callbacks, entry-point helpers."""
