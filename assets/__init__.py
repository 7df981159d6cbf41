"""Offline assets of portrait-ha: the demo model builder, presets, example prompts and CSS."""
