"""The sampler chain a sample draws from (llama.cpp's samplers, in llama-server's order), and a forced token's draw."""

from __future__ import annotations

import ctypes

import llama_cpp

from edgeval.core.prompts import PENALTY_LAST_N, Sampling


def draw(chain: llama_cpp.llama_sampler_p, token: int) -> None:
    """Run a sampler chain over one candidate, `token` (its seeded draw taken, as for a masked step), and accept
    it."""
    data = llama_cpp.llama_token_data(token, 0.0, 0.0)
    candidates = llama_cpp.llama_token_data_array(ctypes.pointer(data), 1, -1, False)
    llama_cpp.llama_sampler_apply(chain, ctypes.byref(candidates))
    llama_cpp.llama_sampler_accept(chain, token)


def sampler_chain(sampling: Sampling, seed: int, n_vocab: int) -> llama_cpp.llama_sampler_p:
    params = llama_cpp.llama_sampler_chain_default_params()
    chain: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_chain_init(params)
    if sampling.presence_penalty:
        penalties = llama_cpp.llama_sampler_init_penalties(n_vocab, PENALTY_LAST_N, 1.0, 0.0, sampling.presence_penalty)
        llama_cpp.llama_sampler_chain_add(chain, penalties)
    if sampling.temperature <= 0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    if sampling.top_k > 0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(sampling.top_k))
    if sampling.top_p < 1.0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
    if sampling.min_p > 0.0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_min_p(sampling.min_p, 1))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(sampling.temperature))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain
