"""The ``bench`` command line: a thin layer over :mod:`bench.api`.

User errors (``BenchError``) print one line to stderr and exit with status 2.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

import click

from bench.interfaces import BenchError

EXIT_USAGE = 2


def parse_model_args(text: str | None, option: str = "--model-args") -> dict[str, Any]:
    """``k=v,k2=v2`` → dict with ints, floats, booleans and ``none`` converted."""
    if not text:
        return {}
    out: dict[str, Any] = {}
    for part in re.split(r",(?=\s*[A-Za-z_][\w.-]*\s*=)", text):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BenchError(f"{option}: expected key=value pairs separated by commas, got {part!r}")
        out[key] = _convert(value.strip())
    return out


def _convert(value: str) -> Any:
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False))


def _judge_options(text: str | None) -> dict[str, Any] | None:
    return parse_model_args(text, "--judge") if text else None


JUDGE_HELP = (
    "LLM judge for CheXprompt on report-generation tasks: model=NAME,base_url=http://127.0.0.1:PORT/v1"
    "[,api_key_env=VAR,concurrency=N,max_retries=N,timeout=S,price_input=USD,price_output=USD] (key from the "
    "environment, never an option)."
)
REMOTE_JUDGE_HELP = (
    "Allow a judge endpoint that is not a loopback address. Never with credentialed data (MIMIC-CXR, CheXpert)."
)


class _BatchSize(click.ParamType):
    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int) or value == "auto":
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a positive integer nor 'auto'", param, ctx)


BATCH_SIZE = _BatchSize()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="medvlbench", prog_name="bench")
def cli() -> None:
    """medvlbench: evaluate medical vision-language models on registered tasks."""


@cli.command("list")
@click.argument("kind", type=click.Choice(["tasks", "models", "datasets", "metrics"]))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(kind: str, as_json: bool) -> None:
    """List registered tasks, models, datasets or metrics."""
    from bench import api

    items = api.list_items(kind)
    if as_json:
        _print_json(items)
        return
    width = max((len(item["name"]) for item in items), default=0) + 1
    for item in items:
        if kind == "tasks":
            status = "" if item["implemented"] else "  [protocol not implemented]"
            click.echo(
                f"{item['name']:{width}} {item['dataset']:14} {item['protocol']:18} "
                f"needs {','.join(item['requires']):10} {','.join(item['metrics'])}{status}"
            )
        elif kind == "models":
            click.echo(f"{item['name']:20} {','.join(item['capabilities']):28} {item['description']}")
        elif kind == "datasets":
            click.echo(f"{item['name']:{width}} {item['description']}")
        else:
            arrow = "↑" if item["higher_is_better"] else "↓"
            click.echo(f"{item['name']:{width}} {arrow} {item['description']}")


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True)
def plugins_cmd(as_json: bool) -> None:
    """List loaded plugins: name, distribution version and hooks."""
    from bench import api

    items = api.list_plugins()
    if as_json:
        _print_json(items)
        return
    for p in items:
        state = " (blocked by BENCH_DISABLE_PLUGINS)" if p["blocked"] else ""
        click.echo(
            f"{p['name']:12} {p['distribution'] or '-'} {p['version'] or '-'}  {p['module']}  "
            f"hooks: {', '.join(p['hooks']) or '-'}{state}"
        )


@cli.command("run")
@click.option("--model", required=True, help="Registered model name (`bench list models`).")
@click.option("--task", "tasks", required=True, help="Task name(s), comma-separated.")
@click.option("--model-args", default="", help="k=v,... passed to the model factory (e.g. checkpoint=DIR).")
@click.option("--data-root", default=None, help="Folder holding one sub-folder per dataset (or BENCH_DATA_ROOT).")
@click.option("--output", default="runs", show_default=True, help="Where run folders are written.")
@click.option("--limit", type=int, default=None, help="First N samples per task (result marked not comparable).")
@click.option(
    "--batch-size",
    type=BATCH_SIZE,
    default="32",
    show_default=True,
    help="Samples per model call, or 'auto': the largest that fits (halved on out-of-memory, recorded in the result).",
)
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-cache", is_flag=True, help="Do not read or write the prediction cache.")
@click.option("--cache", "cache_path", default=None, help="Prediction cache file (default ~/.cache/medvlbench).")
@click.option("--bootstrap", type=int, default=1000, show_default=True, help="Bootstrap resamples (0 = off).")
@click.option("--run-id", default=None, help="Name of the run folder (default: time, model and config hash).")
@click.option("--no-progress", is_flag=True)
@click.option("--judge", default=None, help=JUDGE_HELP)
@click.option("--allow-remote-judge", is_flag=True, help=REMOTE_JUDGE_HELP)
def run_cmd(**kw: Any) -> None:
    """Evaluate a model on one or more tasks."""
    from bench import api

    outcome = api.evaluate(
        kw["model"],
        _split(kw["tasks"]),
        model_args=parse_model_args(kw["model_args"]),
        data_root=kw["data_root"],
        output=kw["output"],
        limit=kw["limit"],
        batch_size=kw["batch_size"],
        device=kw["device"],
        seed=kw["seed"],
        use_cache=not kw["no_cache"],
        cache_path=kw["cache_path"],
        bootstrap=kw["bootstrap"],
        run_id=kw["run_id"],
        progress=not kw["no_progress"],
        judge=_judge_options(kw["judge"]),
        allow_remote_judge=kw["allow_remote_judge"],
    )
    if outcome.rank != 0:
        return  # rank 0 of a distributed run reports
    from reports.text import metric_text

    tasks = outcome.results["tasks"]
    values = {name: {m: v["value"] for m, v in t["metrics"].items()} for name, t in tasks.items()}
    # each metric as text too: "mean ± sd (k seeds)" for a metric averaged over training seeds (fine-tuning)
    text = {name: {m: metric_text(v) for m, v in t["metrics"].items()} for name, t in tasks.items()}
    printed: dict[str, Any] = {"run_dir": str(outcome.run_dir), "metrics": values, "summary": text}
    judged = {name: t["judge"] for name, t in tasks.items() if "judge" in t}
    if judged:
        printed["judge"] = judged
    _print_json(printed)


@cli.command("score")
@click.option("--task", default=None, help="Score with this task's scorer.")
@click.option("--metrics", default=None, help="Or: comma-separated metric names.")
@click.option("--predictions", required=True, help="JSONL: id, prediction, reference (+ task fields) per line.")
@click.option("--output", default=None, help="Also write DIR/scores.json.")
@click.option("--bootstrap", type=int, default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--judge", default=None, help=JUDGE_HELP)
@click.option("--allow-remote-judge", is_flag=True, help=REMOTE_JUDGE_HELP)
@click.option("--cache", "cache_path", default=None, help="Prediction cache file for the judge's verdicts.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the judge's verdicts in the cache.")
def score_cmd(**kw: Any) -> None:
    """Score predictions made elsewhere; prints the metrics as JSON."""
    from bench import api

    result = api.score(
        kw["predictions"],
        task=kw["task"],
        metrics=_split(kw["metrics"]) if kw["metrics"] else None,
        bootstrap=kw["bootstrap"],
        seed=kw["seed"],
        output=kw["output"],
        judge=_judge_options(kw["judge"]),
        allow_remote_judge=kw["allow_remote_judge"],
        cache_path=kw["cache_path"],
        use_cache=not kw["no_cache"],
    )
    _print_json(result)


@cli.command("meddr-bootstrap")
@click.option("--generator", required=True, help="Registered model with the generate capability.")
@click.option("--generator-args", default=None, help="Its own arguments, K=V;K=V (or a JSON object).")
@click.option("--data", required=True, help="Labelled dataset whose images are described (e.g. synthcxr).")
@click.option("--split", default="train", show_default=True)
@click.option("--limit", type=int, default=None, help="First N samples of the split.")
@click.option("--output", required=True, help="JSONL file, one record per generated report.")
@click.option("--max-new-tokens", type=int, default=256, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--image-kind", default="chest X-ray", show_default=True, help="How the prompt names the image.")
@click.option("--data-root", default=None, help="Folder holding one sub-folder per dataset (or BENCH_DATA_ROOT).")
@click.option("--device", default="auto", show_default=True)
@click.option("--cache", "cache_path", default=None, help="Prediction cache file (default ~/.cache/medvlbench).")
def meddr_bootstrap_cmd(**kw: Any) -> None:
    """MedDr diagnosis-guided bootstrapping: findings written from each labelled image and its labels."""
    from bench import api

    _print_json(
        api.meddr_bootstrap(
            kw["generator"],
            kw["data"],
            kw["output"],
            split=kw["split"],
            generator_args=kw["generator_args"],
            limit=kw["limit"],
            max_new_tokens=kw["max_new_tokens"],
            batch_size=kw["batch_size"],
            image_kind=kw["image_kind"],
            data_root_dir=kw["data_root"],
            device=kw["device"],
            cache_path=kw["cache_path"],
        )
    )


@cli.command("train")
@click.argument("model")
@click.option("--preset", default="tiny", show_default=True)
@click.option("--data", default="synthcxr", show_default=True, help="Dataset to train on.")
@click.option("--data-root", default=None)
@click.option("--output", default=None, help="Checkpoint folder (default checkpoints/MODEL-PRESET-DATA).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--train-args",
    default=None,
    help="Model-specific training options K=V,K=V (e.g. encoder=DIR for llava-rad, dkam=false for llava-radz).",
)
def train_cmd(
    model: str,
    preset: str,
    data: str,
    data_root: str | None,
    output: str | None,
    seed: int,
    device: str,
    train_args: str | None,
) -> None:
    """Train a bundled reference model; evaluate it later with --model-args checkpoint=DIR."""
    from bench import api

    path = api.train(
        model,
        preset,
        data,
        output,
        seed=seed,
        device=device,
        data_root_dir=data_root,
        train_args=parse_model_args(train_args),
    )
    click.echo(str(path))


@cli.group("data", invoke_without_command=True)
@click.option("--data-root", default=None, help="folder holding one sub-folder per dataset (or BENCH_DATA_ROOT)")
@click.pass_context
def data_cmd(ctx: click.Context, data_root: str | None) -> None:
    """Datasets: without a sub-command, show each one and whether it is found under the data root."""
    if ctx.invoked_subcommand is not None:
        return
    from bench import api
    from bench.runner import data_root as resolve_root

    root = resolve_root(data_root)
    for item in api.list_items("datasets"):
        if not item["needs_root"]:
            state = "generated on use"
        elif root is None:
            state = "no --data-root / BENCH_DATA_ROOT given"
        else:
            folder = root / item["folder"]
            state = f"found at {folder}" if folder.is_dir() else f"missing: expected {folder}"
        click.echo(f"{item['name']:16} {state}")


@data_cmd.command("check")
@click.argument("name")
@click.option("--root", default=None, help="the dataset's own folder (default: BENCH_DATA_ROOT/<folder>)")
@click.option("--json", "as_json", is_flag=True, help="print {dataset, ok, splits, problems} as JSON")
def data_check_cmd(name: str, root: str | None, as_json: bool) -> None:
    """Validate a local copy of a dataset without loading every image."""
    from bench import api

    report = api.data_check(name, root)
    if as_json:
        _print_json(report)
    else:
        counts = ", ".join(f"{k} {v}" for k, v in report["splits"].items()) or "no split read"
        click.echo(f"{report['dataset']}: {'ok' if report['ok'] else 'PROBLEMS'} ({counts})")
        for problem in report["problems"]:
            click.echo(f"  - {problem}")
    if not report["ok"]:
        raise SystemExit(EXIT_USAGE)


@data_cmd.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def data_info_cmd(name: str, as_json: bool) -> None:
    """Where to obtain a dataset, its licence and the layout the reader expects."""
    from bench import api

    info = api.data_info(name)
    if as_json:
        _print_json(info)
        return
    for key in ("name", "description", "obtain", "licence", "folder", "splits"):
        value = info.get(key)
        if value:
            click.echo(f"{key:12} {', '.join(value) if isinstance(value, list) else value}")
    if info.get("layout"):
        click.echo("layout:")
        for line in str(info["layout"]).splitlines():
            click.echo(f"  {line}")


@cli.command("compare")
@click.argument("baseline")
@click.argument("new")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="Compare only these metrics (repeatable or comma-separated); default all.",
)
@click.option(
    "--max-drop", type=float, default=None, help="Also fail when a metric worsens by more than X (its units)."
)
@click.option("--alpha", type=float, default=0.05, show_default=True, help="Significance level of the paired test.")
@click.option("--resamples", type=int, default=1000, show_default=True, help="Paired bootstrap resamples.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--correction",
    type=click.Choice(["holm", "none"]),
    default="holm",
    show_default=True,
    help="Multiple-testing correction over all metrics compared.",
)
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text", show_default=True)
def compare_cmd(
    baseline: str,
    new: str,
    metrics: tuple[str, ...],
    max_drop: float | None,
    alpha: float,
    resamples: int,
    seed: int,
    correction: str,
    fmt: str,
) -> None:
    """Regression gate: exit 0 if no metric of NEW is significantly worse than BASELINE (or worse by more
    than --max-drop), 1 on a regression, 2 on unusable input (other data, missing tasks or metrics)."""
    from bench import api

    result = api.compare(
        baseline,
        new,
        metrics=[m for value in metrics for m in _split(value)],
        max_drop=max_drop,
        alpha=alpha,
        resamples=resamples,
        seed=seed,
        correction=correction,
    )
    click.echo(result.render(fmt))
    if result.exit_code:
        raise SystemExit(result.exit_code)


@cli.command("leaderboard")
@click.argument("runs_dirs", nargs=-1, required=True)
@click.option("--output", required=True, help="Folder the static site is written to (SITE_DIR/index.html).")
@click.option("--reported", is_flag=True, help="Add the papers' reported numbers beside the measured ones.")
@click.option("--title", default="medvlbench leaderboard", show_default=True)
@click.option(
    "--include-samples",
    is_flag=True,
    help="Embed sample images and texts of non-synthetic (e.g. credentialed) datasets in the run reports.",
)
def leaderboard_cmd(runs_dirs: tuple[str, ...], output: str, reported: bool, title: str, include_samples: bool) -> None:
    """Build the static HTML leaderboard from run folders (each RUNS_DIR holds runs or is one)."""
    from leaderboard.site import build_site

    index = build_site(list(runs_dirs), output, reported=reported, title=title, include_samples=include_samples)
    click.echo(str(index))


@cli.command("demo")
@click.option("--output", default="runs", show_default=True)
@click.option("--data-root", default=None)
@click.option("--bootstrap", type=int, default=1000, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--models",
    default=None,
    help="Only these demo models (comma-separated), plus the models they start from; default all.",
)
@click.option(
    "--all-tasks",
    is_flag=True,
    help="Also full fine-tuning (and its Scratch baseline) at 1/10/100 %: every synthcxr task, about 10 minutes "
    "more on a 2-core CPU.",
)
def demo_cmd(
    output: str, data_root: str | None, bootstrap: int, device: str, models: str | None, all_tasks: bool
) -> None:
    """Train the tiny reference models on synthcxr, run the synthcxr tasks, write the leaderboard site."""
    from bench import api
    from leaderboard.site import build_site

    chosen = _split(models) if models else None
    outcome = api.demo(output, data_root, bootstrap=bootstrap, device=device, models=chosen, all_tasks=all_tasks)
    notes = []
    if outcome["left_out"]:
        notes.append(
            f"Not run by this demo (full fine-tuning: minutes per fraction on a CPU): {', '.join(outcome['left_out'])}."
            " `bench demo --all-tasks` runs them too."
        )
    site = build_site([output], os.path.join(output, "site"), reported=True, title="medvlbench demo", notes=notes)
    click.echo(f"leaderboard: {site}", err=True)
    _print_json({**outcome, "site": str(site)})


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        cli.main(args=argv, prog_name="bench", standalone_mode=False)
    except BenchError as exc:
        click.echo(f"error: {exc}", err=True)
        return EXIT_USAGE
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE if exc.exit_code == 2 else exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted: finished model calls are cached; run the same command to resume", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
