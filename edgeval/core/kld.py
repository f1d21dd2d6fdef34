"""KL divergence between two configurations' next-token distributions (pure: numpy over logits rows and stored
per-position values).

The reference row is kept as its top-K log-probabilities with their token ids, plus the log of the mass left over
(the rest). Against a tested row, KL(reference ‖ tested) ≈ Σ_topK p·log(p/q) + p_rest·log(p_rest/q_rest): the KL of
the two distributions with the rest merged into one outcome, a lower bound of the full KL (merging outcomes never
raises a divergence) that is exact once K covers the vocabulary. `TOP_K` says how close it is, measured.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# Reference log-probabilities kept per position, at least. Measured against the full computation on the trained
# family (tiny-s and tiny-l, F16 reference, 40 arith traces, ~1,740 positions, 1,024-token vocabulary; tested Q4_K_M
# and Q2_K): mean KLD with these settings 0.002–0.04% below the full vocabulary's; with 64 tokens and no widening
# 0.002–0.08%, 16: 0.02–0.23%, 8: 0.05–0.86%. 64 ids and log-probabilities are 512 B a position.
TOP_K = 64
# Where the top K leave more than REST_MASS of the reference's probability outside (a high-entropy position), more
# of its most likely tokens are kept, up to MAX_K, until the rest holds no more than that: the bound stays tight
# where sampling wanders, at 8 KiB a position at most. Near-uniform distributions (random-weight models) leave most
# of the mass outside even then, and the bound is loose there (the README's benchmark): `Summary.rest_mass` says so.
REST_MASS = 1e-3
MAX_K = 1024

Floats = npt.NDArray[np.float32]
Ints = npt.NDArray[np.int32]


def log_softmax(logits: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Log-probabilities of a logits row, in float64."""
    x = logits.astype(np.float64)
    m = float(x.max())
    return x - (m + math.log(float(np.exp(x - m).sum())))


def _log_sum(logp: npt.NDArray[np.float64]) -> float:
    if logp.size == 0:
        return -math.inf
    m = float(logp.max())
    return m + math.log(float(np.exp(logp - m).sum()))


@dataclass(frozen=True)
class RefRow:
    """What one position of the reference keeps: its most likely token ids and their log-probabilities (float32),
    the log of the rest's mass, and its most likely token."""

    ids: Ints
    logp: Floats
    log_rest: float
    top1: int

    @property
    def rest(self) -> float:
        """The reference's probability outside the kept tokens (how loose the bound can be)."""
        return math.exp(self.log_rest)


def _kept(logp: npt.NDArray[np.float64], k: int, max_k: int, rest_mass: float) -> npt.NDArray[np.intp]:
    """The ids to keep: the k most likely, or more (up to max_k) until the rest holds at most rest_mass."""
    n = logp.size
    if k >= n:
        return np.arange(n)
    top = np.argpartition(-logp, k)[:k]
    if max_k <= k or 1.0 - float(np.exp(logp[top]).sum()) <= rest_mass:
        return top
    cap = min(max_k, n)
    wider = np.arange(n) if cap >= n else np.argpartition(-logp, cap - 1)[:cap]
    wider = wider[np.argsort(-logp[wider], kind="stable")]
    enough = int(np.searchsorted(np.cumsum(np.exp(logp[wider])), 1.0 - rest_mass)) + 1
    return wider[: max(k, min(enough, cap))]


def reference_row(
    logits: npt.NDArray[np.floating], k: int = TOP_K, *, max_k: int = MAX_K, rest_mass: float = REST_MASS
) -> RefRow:
    """Reduce a reference logits row to what KL needs: the k most likely tokens (more, up to max_k, where they
    leave over rest_mass of the probability outside) and the rest's mass."""
    logp = log_softmax(logits)
    ids: Ints = np.sort(_kept(logp, k, max_k, rest_mass)).astype(np.int32)
    rest = np.ones(logp.size, dtype=bool)
    rest[ids] = False
    # The stored values are float32; the tested side is rounded the same way, so a configuration against itself
    # gives exactly 0.
    return RefRow(ids, logp[ids].astype(np.float32), float(np.float32(_log_sum(logp[rest]))), int(np.argmax(logits)))


def divergence(ref: RefRow, logits: npt.NDArray[np.floating]) -> tuple[float, bool]:
    """KL(reference ‖ tested) at one position (nats; over the reference's top-K and the merged rest), and whether
    the two agree on the most likely token."""
    logq = log_softmax(logits)
    rest = np.ones(logq.size, dtype=bool)
    rest[ref.ids] = False
    lp = ref.logp.astype(np.float64)
    lq = logq[ref.ids].astype(np.float32).astype(np.float64)
    kl = float(np.sum(np.exp(lp) * (lp - lq)))
    if ref.log_rest > -math.inf:
        lq_rest = float(np.float32(_log_sum(logq[rest])))
        kl += math.exp(ref.log_rest) * (ref.log_rest - lq_rest)
    return max(0.0, kl), int(np.argmax(logits)) == ref.top1


@dataclass(frozen=True)
class TraceScores:
    """One trace's per-position KL divergences and top-1 agreement (position 0: the trace's first token)."""

    item_index: int
    kld: Floats
    agree: npt.NDArray[np.bool_]
    rest: Floats  # the reference's probability outside its kept tokens

    @property
    def tokens(self) -> int:
        """Positions scored."""
        return int(self.kld.size)


@dataclass(frozen=True)
class Summary:
    """KLD over a set of positions: mean per token with a 95% interval over traces, median, 99th percentile,
    top-1 agreement."""

    tokens: int
    traces: int
    mean_kld: float
    kld_ci95: tuple[float, float] | None  # None with fewer than two traces
    median_kld: float
    p99_kld: float
    top1_agreement: float
    rest_mass: float = 0.0  # mean reference probability outside the kept tokens: the bound's possible slack

    def to_json(self) -> dict[str, object]:
        """As `kld --json` prints it."""
        return {"tokens": self.tokens, "traces": self.traces, "mean_kld": self.mean_kld,
                "kld_ci95": list(self.kld_ci95) if self.kld_ci95 else None, "median_kld": self.median_kld,
                "p99_kld": self.p99_kld, "top1_agreement": self.top1_agreement, "rest_mass": self.rest_mass}  # fmt: skip


@dataclass(frozen=True)
class Bucket:
    """Positions [start, end) of every trace, and their summary."""

    start: int
    end: int
    summary: Summary

    @property
    def label(self) -> str:
        """`0–1k`, `1k–2k`, `16–32`."""
        from edgeval.core.units import format_tokens

        return f"{format_tokens(self.start)}–{format_tokens(self.end)}"

    def to_json(self) -> dict[str, object]:
        """As `kld --json` prints it."""
        return {"start": self.start, "end": self.end, "label": self.label, **self.summary.to_json()}


def ratio_ci(sums: Sequence[float], counts: Sequence[int], z: float = 1.96) -> tuple[float, float] | None:
    """95% interval of Σ sums / Σ counts (a mean per token) with traces as the independent units: the ratio
    estimator's linearized variance over clusters. None with fewer than two traces."""
    n = len(sums)
    total = float(sum(counts))
    if n < 2 or total <= 0:
        return None
    mean = sum(sums) / total
    residual = sum((s - mean * c) ** 2 for s, c in zip(sums, counts, strict=True))
    half = z * math.sqrt(n / (n - 1) * residual) / total
    return max(0.0, mean - half), mean + half


def summarize(traces: Sequence[TraceScores], start: int = 0, end: int | None = None) -> Summary:
    """The summary of positions [start, end) over every trace (traces shorter than `start` take no part)."""
    parts = [(t.kld[start:end].astype(np.float64), t.agree[start:end], t.rest[start:end]) for t in traces]
    parts = [part for part in parts if part[0].size]
    if not parts:
        return Summary(0, 0, 0.0, None, 0.0, 0.0, 1.0)
    every = np.concatenate([k for k, _, _ in parts])
    agree = np.concatenate([a for _, a, _ in parts])
    sums = [float(k.sum()) for k, _, _ in parts]
    counts = [int(k.size) for k, _, _ in parts]
    return Summary(
        tokens=int(every.size),
        traces=len(parts),
        mean_kld=float(every.mean()),
        kld_ci95=ratio_ci(sums, counts),
        median_kld=float(np.median(every)),
        p99_kld=float(np.percentile(every, 99)),
        top1_agreement=float(agree.mean()),
        rest_mass=float(np.concatenate([r for _, _, r in parts]).astype(np.float64).mean()),
    )


def bucket_edges(longest: int) -> list[int]:
    """Position buckets that double: 0–1k, 1k–2k, 2k–4k, … for long traces; for short ones the same doubling from
    a smaller first bucket (a power of two, at least 16, about a quarter of the longest trace), so a few hundred
    tokens still show a trend."""
    if longest <= 0:
        return [0, 1]
    base = 1024
    while base > 16 and base * 4 > longest:
        base //= 2
    edges = [0, base]
    while edges[-1] < longest:
        edges.append(edges[-1] * 2)
    return edges


def by_position(traces: Sequence[TraceScores]) -> tuple[Bucket, ...]:
    """The summary in position buckets (`bucket_edges` of the longest trace)."""
    edges = bucket_edges(max((t.tokens for t in traces), default=0))
    return tuple(Bucket(a, b, summarize(traces, a, b)) for a, b in itertools.pairwise(edges))
