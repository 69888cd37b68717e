"""``llmroute quality collect``: send your own prompts to both tiers, grade them, write routing labels."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..errors import LLMRouteError
from ..pricing import format_usd
from .common import FormatOption, OutputFormat, console, err, fail, load_or_fail, output_format, print_csv, print_json


def collect(
    data: Annotated[Path, typer.Option(help="Prompts, one JSON object a line: prompt or messages, and optionally "
                                            "reference (the gold answer), tags, id, params")],
    out: Annotated[Path, typer.Option(help="Labels to write (routing data for `router train` and `router eval`); "
                                           "re-run with the same --out to resume")],
    config: Annotated[Optional[Path], typer.Option(help="Config file (default: ./llmroute.yaml or $LLMROUTE_CONFIG)")] = None,
    grader: Annotated[Optional[str], typer.Option(help="Default grader: exact | choice | number | json | similarity | "
                                                       "judge (config `graders` rules by tag still apply first)")] = None,
    max_usd: Annotated[float, typer.Option(min=0, help="Spending cap in US$ for this --out, resumes included")] = 5.0,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Prompts in flight at once")] = 4,
    reference: Annotated[Optional[str], typer.Option(help="Reference tier (default: quality_aware's strong provider)")] = None,
    candidate: Annotated[Optional[str], typer.Option(help="Candidate tier (default: quality_aware's weak provider)")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="max_tokens of a prompt whose params set none")] = 512,
    ledger: Annotated[bool, typer.Option(help="Also record the graded pairs in the config's ledger, where "
                                              "`llmroute quality` and `plan` measure from")] = True,
    fmt: FormatOption = "table",
) -> None:
    """Send each prompt to both tiers, grade the pair, write labels, and show what each strategy would keep.

    Resumable: answers are kept in OUT.calls as they arrive, so a re-run never pays twice for a call that
    was answered. The cap is never passed: each prompt's worst case is reserved before it is sent.
    """
    from ..config.evaluation import GRADER_NAMES
    from ..evaluation.collect import Collector, load_labels
    from ..evaluation.prompts import load_prompts
    from ..router import LLMRouter

    fmt = output_format(fmt)
    cfg = load_or_fail(config)
    try:
        lines = load_prompts(data)
    except LLMRouteError as exc:
        fail(str(exc))
    if out.resolve() == data.resolve():
        fail("--out must not be the --data file")
    if not out.parent.is_dir():
        fail(f"{out.parent}: no such directory for --out")
    if out.is_dir():
        fail(f"--out {out} is a directory; name the labels file to write")
    try:
        load_labels(out)  # a file this command did not write is refused before anything is sent
    except LLMRouteError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(_cannot_write(exc))
    default_reference, default_candidate = cfg.shadow_pair()
    reference, candidate = reference or default_reference, candidate or default_candidate
    for option, name in (("--reference", reference), ("--candidate", candidate)):
        if name not in cfg.providers:
            fail(f"{option} {name!r} is not a configured provider (known: {', '.join(cfg.providers)})")
    if reference == candidate:
        fail(f"the reference and candidate tiers are the same provider ({reference}); name two with "
              "--reference and --candidate")
    if grader is not None and grader not in GRADER_NAMES:
        fail(f"--grader {grader!r} is unknown; valid graders: {', '.join(sorted(GRADER_NAMES))}")
    logging.getLogger("llmroute").setLevel(logging.ERROR)  # failures show in the summary, not as log lines

    try:
        router = LLMRouter(config=cfg, ledger=None if ledger else False)
    except LLMRouteError as exc:  # a quality model file or a ledger that cannot be used
        fail(str(exc))
    try:  # opens OUT.calls: an --out where nothing can be written fails here, before anything is sent
        collector = Collector(cfg, router.providers, router.pricers, router.state, reference=reference,
                              candidate=candidate, out=out, max_usd=max_usd, concurrency=concurrency, grader=grader,
                              max_tokens=max_tokens, ledger=router.ledger)
    except OSError as exc:
        asyncio.run(router.aclose())
        fail(_cannot_write(exc))
    try:
        collector.check_graders(lines)
    except ValueError as exc:
        collector.log.close()
        asyncio.run(router.aclose())
        fail(str(exc))
    interrupted = False
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True, disable=fmt != OutputFormat.TABLE) as progress:
        task = progress.add_task(f"{reference} vs {candidate}", total=len(lines))

        def advance(summary: Any) -> None:
            progress.update(task, completed=summary.skipped + summary.graded + summary.ungraded,
                            description=f"{reference} vs {candidate}, {format_usd(summary.spent_usd)} spent")

        collector.on_done = advance

        async def main() -> Any:
            try:
                return await collector.run(lines)
            finally:
                await router.aclose()

        try:
            summary = asyncio.run(main())
        except KeyboardInterrupt:
            interrupted, summary = True, collector.summary
        except OSError as exc:  # --out or OUT.calls could not be written (a full disk): what was written stays
            fail(f"{_cannot_write(exc)}; re-run the same command to resume")
    _report(cfg, out, reference, candidate, summary, fmt, interrupted, max_usd)
    if interrupted:
        raise typer.Exit(130)


def _cannot_write(exc: OSError) -> str:
    return f"--out: cannot write {exc.filename or 'the labels'}: {exc.strerror or type(exc).__name__}"


def _report(cfg: Any, out: Path, reference: str, candidate: str, summary: Any, fmt: OutputFormat,
            interrupted: bool, max_usd: float) -> None:
    from ..evaluation.collect import load_labels, strategy_estimates

    graded, ungraded, _ = load_labels(out)
    estimates = strategy_estimates(cfg, graded, reference, candidate) if graded else []
    rows = [{"strategy": e.strategy, "reference_share": e.reference_share,
             "retained": e.estimate.value if e.estimate else None, "ci_low": e.estimate.low if e.estimate else None,
             "ci_high": e.estimate.high if e.estimate else None, "pairs": e.estimate.pairs if e.estimate else 0,
             "note": e.note} for e in estimates]
    counts = {"prompts": summary.prompts, "labelled": len(graded), "ungraded": len(ungraded),
              "skipped": summary.skipped, "left": summary.left, "capped": summary.capped,
              "reused_answers": summary.reused_answers,
              "spent_usd": summary.spent_usd, "total_spent_usd": summary.total_spent_usd, "max_usd": max_usd,
              "ungraded_reasons": summary.ungraded_reasons, "interrupted": interrupted}
    if fmt == OutputFormat.JSON:
        print_json({"out": str(out), "reference": reference, "candidate": candidate, **counts, "strategies": rows})
        return
    if fmt == OutputFormat.CSV:
        print_csv(rows)
        return
    console.print(f"wrote {out}: {len(graded):,} graded, {len(ungraded):,} ungraded of {summary.prompts:,} prompts "
                  f"({summary.skipped:,} labelled before, {summary.reused_answers:,} answers reused); "
                  f"spent {format_usd(summary.spent_usd)} this run, {format_usd(summary.total_spent_usd)} of "
                  f"{format_usd(max_usd)} in all", highlight=False)
    if summary.left and summary.capped and not interrupted:
        err.print(Text.assemble(("stopped:", "yellow"), f" {summary.left:,} prompts left; the next would pass "
                                f"--max-usd {max_usd:g}. Raise it and re-run the same command to go on."), highlight=False)
    if interrupted:
        err.print(Text.assemble(("interrupted:", "yellow"), f" {summary.left:,} prompts left; re-run the same command "
                                "to resume; answers already received are not paid for again."), highlight=False)
    if ungraded:
        reasons = ", ".join(f"{k}: {v}" for k, v in summary.ungraded_reasons.items())
        err.print(Text.assemble(("note:", "yellow"), f" {len(ungraded):,} lines are ungraded"
                                + (f" ({reasons})" if reasons else "") + "; they carry the reason and no scores, "
                                "and a re-run tries them again from the stored answers."), highlight=False)
    if not estimates:
        return
    table = Table(title=f"quality kept relative to all-{reference}, on these prompts (candidate {candidate})",
                  title_justify="left")
    for column in ("strategy", f"to {reference}", "retained", "95% CI", "pairs"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for row in rows:
        share = "-" if row["reference_share"] is None else f"{row['reference_share']:.0%}"
        if row["retained"] is None:
            table.add_row(row["strategy"], share, "-", row["note"] or "-", "0")
            continue
        table.add_row(row["strategy"], share, f"{row['retained']:.1%}",
                      f"{row['ci_low']:.1%}–{row['ci_high']:.1%}", f"{row['pairs']:,}")
    console.print(table)
    for row in rows:
        if row["note"] and row["retained"] is not None:
            err.print(Text.assemble(("note:", "yellow"), f" {row['note']}"), highlight=False)
    if len(graded) < cfg.shadow.min_pairs:
        err.print(Text.assemble(("warning:", "yellow"), f" only {len(graded):,} graded pairs (fewer than "
                                f"shadow.min_pairs, {cfg.shadow.min_pairs}): the intervals are wide"), highlight=False)
