"""The llama.cpp side: loading models, contexts, generation (many questions in flight), teacher-forced
scoring, the tiny synthetic models, the machine's probes (doctor, the throughput knee). The only importer of
llama_cpp (engine.py).
"""
