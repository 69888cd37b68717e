"""``llmroute router``: train, evaluate and split data for the quality-aware router."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from ..errors import LLMRouteError
from ..ledger import Store
from ..quality.data import Example
from .common import (ConfigOption, FormatOption, JsonAlias, LedgerOption, OutputFormat, check_plot_path,
                     config_or_none, console, err, fail, open_ledger_store, output_format, print_csv, print_json)

router_app = typer.Typer(help="Train and evaluate the quality-aware router's model.", no_args_is_help=True)


def _examples(path: Path):  # type: ignore[no-untyped-def]
    return [example for example, _ in _lines(path)]


def _lines(path: Path):  # type: ignore[no-untyped-def]
    from ..quality.data import load_lines

    ungraded: list[str] = []
    try:
        lines = load_lines(path, ungraded)
    except LLMRouteError as exc:
        fail(str(exc))
    if ungraded:
        err.print(f"skipped {len(ungraded):,} ungraded lines (no scores: see each line's 'ungraded' reason), "
                  f"the first at {ungraded[0]}", highlight=False)
    return lines


def ledger_examples(store: Store, since_ts: float | None = None) -> tuple[list[Example], int]:
    """Training examples from the ledger's graded pairs that kept their prompt (``shadow.store_text``), and the
    number of graded pairs that could not be used because they kept no text.

    The candidate tier's grade is the weak score, the reference tier's the strong one; the route (or strategy)
    is the benchmark, so cross-validation reports per route."""
    from ..quality_report import load_pairs

    examples, textless = [], 0
    for pair in load_pairs(store, since_ts):
        if pair.candidate_grade is None or pair.reference_grade is None:
            continue
        if not pair.prompt or not pair.prompt.strip():
            textless += 1
            continue
        examples.append(Example(id=pair.request_id, benchmark=pair.route or pair.strategy or "ledger",
                                prompt=pair.prompt, weak=pair.candidate_grade, strong=pair.reference_grade))
    return examples, textless


@router_app.command()
def train(
    out: Annotated[Path, typer.Option(help="Where to write the model (.json.gz or .json)")],
    data: Annotated[Optional[Path], typer.Option(
        help="Labelled prompts, one JSON object a line (see docs/QUALITY.md)")] = None,
    from_ledger: Annotated[bool, typer.Option(
        "--from-ledger", help="Train on the ledger's graded pairs (they keep prompts only with shadow.store_text)")] = False,
    ledger: LedgerOption = None,
    config: ConfigOption = None,
    since: Annotated[Optional[str], typer.Option(
        help="With --from-ledger, only pairs from this span back from now: 12h, 7d, 4w (default: all)")] = None,
    c: Annotated[float, typer.Option(help="Inverse regularisation strength of the linear models")] = 0.3,
    seed: Annotated[int, typer.Option(help="Seed for the cross-validation folds")] = 20260,
) -> None:
    """Fit a model on labelled prompts. The same data and options give the same file, byte for byte."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from ..quality.train import TrainSettings, train as fit

    if (data is None) == (not from_ledger):
        fail("give exactly one of --data FILE and --from-ledger")
    if data is not None:
        examples = _examples(data)
    else:
        examples = _ledger_examples(ledger, config, since)
    with Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), TimeElapsedColumn(), console=err) as progress:
        task = progress.add_task(f"training on {len(examples):,} prompts", total=None)
        try:
            model = fit(examples, TrainSettings(c=c, seed=seed),
                        progress=lambda msg: progress.update(task, description=msg))
        except LLMRouteError as exc:
            fail(str(exc))
    try:
        model.save(out)
    except OSError as exc:
        fail(f"{out}: cannot write ({exc.strerror or type(exc).__name__})")
    v = model.validation
    console.print(f"wrote {out} ({out.stat().st_size:,} bytes, {len(model.term_table):,} terms); "
                  f"cross-validated, whole subjects held out: calls for 95% quality {_share(v['calls_for_95'])} "
                  f"(random {_share(v['random_calls_for_95'])}), APGR {v['apgr']:.3f}", highlight=False)


def _ledger_examples(ledger: Optional[str], config: Optional[Path], since: Optional[str]) -> list[Example]:
    from ..report import window

    cfg = config_or_none(config)
    store = open_ledger_store(ledger, cfg)
    since_ts = None
    if since is not None:
        try:
            since_ts = window(since, None, None)[0]
        except ValueError as exc:
            fail(str(exc))
    try:
        examples, textless = ledger_examples(store, since_ts)
    finally:
        store.close()
    if not examples:
        why = (f"its {textless:,} graded pairs kept no prompt: set shadow.store_text: true (prompts are then stored "
               "in the ledger) or train from `llmroute quality collect` labels with --data" if textless else
               "it has no graded pairs: start with `shadow: {rate: 0.05, store_text: true}` or `llmroute quality collect`")
        fail(f"the ledger {store.where} has nothing to train on: {why}")
    if textless:
        err.print(f"{textless:,} graded pairs kept no prompt (recorded without shadow.store_text) and were left out",
                  highlight=False)
    return examples


@router_app.command("eval")
def evaluate_command(
    data: Annotated[Path, typer.Option(help="Labelled prompts to judge the router on")],
    model: Annotated[Optional[Path], typer.Option(help="A model file (default: the shipped model)")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Write the cost/quality curves to FILE.png, .svg, .pdf or .html")] = None,
    fmt: FormatOption = "table",
    as_json: JsonAlias = False,
) -> None:
    """Calls needed for 95% quality, APGR and quality at 20% strong calls, beside random routing.

    Warns when the figures are in-sample: the model was trained on this data, or on some of its prompts.
    """
    from ..plots import write_chart
    from ..quality.evaluate import curve_chart, evaluate, honesty_notes
    from ..quality.model import QualityRouter

    check_plot_path(plot)
    fmt = output_format(fmt, as_json)
    examples = _examples(data)
    try:
        router = QualityRouter.load(model)
        results = evaluate(router, examples)
        notes = honesty_notes(router, examples, results)
        if model is None:
            trained = router.meta.get("examples")
            notes.insert(0, f"no --model given: this is the model shipped with llmroute ({router.source}"
                            + (f", trained on {trained:,} MMLU and GSM8K prompts" if isinstance(trained, int) else "")
                            + "); pass --model FILE to judge your own")
        if plot is not None:
            title = f"{Path(router.source).name} on {data.name}"
            write_chart(plot, lambda chart_fmt: curve_chart(results, title, chart_fmt), title, _html_table(results))
    except LLMRouteError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{plot}: cannot write ({exc.strerror or type(exc).__name__})")
    for note in notes:
        err.print(Text.assemble(("warning:", "yellow"), " ", note), highlight=False)
    rows = [{"benchmark": r.benchmark, **r.to_dict()} for r in results]
    if fmt == OutputFormat.JSON:
        print_json({"model": router.source, "data": str(data), "warnings": notes, "results": [r.to_dict() for r in results]})
        return
    if fmt == OutputFormat.CSV:
        print_csv(rows)
        return
    table = Table(title=f"{router.source} on {data} ({len(examples):,} prompts)", title_justify="left")
    for column in ("benchmark", "prompts", "weak-only", "strong-only", "calls for 95%", "random", "APGR", "random",
                   "quality @20%", "random"):
        table.add_column(column, justify="left" if column == "benchmark" else "right")
    for r in results:
        d = r.to_dict()
        table.add_row(r.benchmark, f"{r.prompts:,}", f"{d['weak_only_quality']:.3f}", f"{d['strong_only_quality']:.3f}",
                      _share(d["calls_for_95"]), _share(d["random_calls_for_95"]), f"{d['apgr']:.3f}",
                      f"{d['random_apgr']:.3f}", f"{d['quality_at_20']:.3f}", f"{d['random_quality_at_20']:.3f}")
    console.print(table)
    if plot is not None:
        console.print(f"curves written to {plot}", highlight=False)


def _html_table(results: list) -> str:  # type: ignore[type-arg]
    import html

    head = ("benchmark", "prompts", "calls for 95%", "random", "APGR", "random APGR", "quality @20%")
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            r.benchmark, r.prompts, _share(r.router.calls_for(0.95)), _share(r.random.calls_for(0.95)),
            f"{r.router.apgr():.3f}", f"{r.random.apgr():.3f}", f"{r.router.at(0.2):.3f}")) + "</tr>"
        for r in results)
    return ("<table border=1 cellpadding=4><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + body
            + "</table>")


@router_app.command()
def split(
    data: Annotated[Path, typer.Option(help="Labelled prompts to split")],
    train_out: Annotated[Path, typer.Option(help="Where to write the training part")],
    valid_out: Annotated[Path, typer.Option(help="Where to write the held-out part")],
    share: Annotated[float, typer.Option(help="Share held out")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed for the choice of subjects and prompts")] = 20260,
) -> None:
    """Hold out whole subjects (where a benchmark has several) and a share of the other prompts."""
    from ..quality.train import split_holdout

    if not 0.0 < share < 1.0:
        fail("--share must be between 0 and 1")
    pairs = _lines(data)
    line_of = {id(example): line for example, line in pairs}
    kept, held = split_holdout([example for example, _ in pairs], share, seed)
    for path, part in ((train_out, kept), (valid_out, held)):
        path.write_text("".join(line_of[id(e)] + "\n" for e in part), encoding="utf-8")
    subjects = sorted({e.subject for e in held if e.subject} - {e.subject for e in kept if e.subject})
    console.print(f"{len(kept):,} prompts to {train_out}, {len(held):,} to {valid_out}; "
                  f"subjects held out whole: {', '.join(subjects) or 'none'}", highlight=False)


def _share(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}"
