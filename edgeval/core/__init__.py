"""The pure core: units and sizes, quantization types, errors, the memory equation, voting, racing statistics,
answer grading, chat prompts and KL divergence. Imports nothing else of edgeval's and never llama.cpp.
"""
