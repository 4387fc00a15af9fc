"""glidekit: GLIDE text-guided diffusion, weight-compatible with OpenAI's released checkpoints."""

__version__ = "0.1.0"
