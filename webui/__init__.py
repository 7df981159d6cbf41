"""portrait-ha node: a GPU worker that owns the diffusion pipeline and a Gradio web front."""
