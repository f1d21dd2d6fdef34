"""The edges: what edgeval reads and keeps — the model catalog, the Hugging Face Hub, GGUF headers, tasks,
the SQLite store and the results read back from it. Built on the core only; never llama.cpp.
"""
