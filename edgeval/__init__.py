"""edgeval: measure which local Qwen3 configuration gives the best accuracy in the memory you have."""

__version__ = "0.1.0"
