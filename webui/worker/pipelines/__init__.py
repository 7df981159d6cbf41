"""What a worker serves: the pipelines, where their weights come from, and where they run.

Every pipeline has the same shape (``base.PipelineBase``); ``loader.load_pipeline`` picks one for
a worker's settings and is the one place that imports torch and diffusers, only when a real model
is asked for. This package imports nothing heavy on its own.
"""
