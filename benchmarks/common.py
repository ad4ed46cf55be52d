"""Shared helpers for the benchmarks: the machine's measured GEMM peak and model FLOPs per token."""

from __future__ import annotations

import time

import torch


def gemm_peak_gflops(n: int = 1024, repeats: int = 20) -> float:
    """Measured fp32 matmul throughput of this machine (best of ``repeats``), in GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def decode_flops_per_token(model) -> float:
    """≈ 2 × (parameters used per token): every weight matrix once, the embedding lookup excluded.

    With tied embeddings (SmolLM2) the LM head reuses the embedding matrix, so it is counted once as the head.
    Attention over the KV cache adds 2·layers·ctx·d per token, small at these lengths and left out.
    """
    return 2.0 * sum(p.numel() for p in model.parameters())


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
