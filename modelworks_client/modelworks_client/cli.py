"""`modelworks`: the client on the command line, for CI jobs.

Exit codes: 0 ok; 1 error (one line on stderr); 2 usage; 3 rejected by the quality gates (register);
4 rollout rolled back or aborted, 5 rollout paused or --wait timed out (rollout --wait).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modelworks_client.client import Client, Rollout, Version
from modelworks_client.errors import GateRejected, ModelworksError, RolloutTimeout

OK, ERROR, USAGE, REJECTED, ROLLED_BACK, PAUSED = 0, 1, 2, 3, 4, 5


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    found = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ModelworksError(f"{option}: expected KEY=VALUE, got {item!r}")
        found[name] = value
    return found


def _value(text: str) -> Any:
    """A JSON value when it reads as one (1, 0.5, true, "x"), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _out(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def _version_line(version: Version) -> str:
    report = version.gate_report
    rules = [f"  {'pass' if r['passed'] else 'FAIL'}  {r['rule']}" + (f"  ({r['reason']})" if r.get("reason") else "")
             for r in report.get("rules", [])]  # fmt: skip
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in sorted(version.gate_metrics.items()))
    head = f"{version.model} v{version.version}: {version.status}  sha256 {version.sha256[:12]}  {metrics}"
    aliases = f"  aliases: {', '.join(version.aliases)}" if version.aliases else ""
    return "\n".join([head + aliases, *rules])


def _register(mw: Client, args: argparse.Namespace) -> int:
    eval_data = None
    if args.eval_data:
        import pandas as pd

        try:
            eval_data = pd.read_csv(args.eval_data)
        except (OSError, ValueError) as exc:
            raise ModelworksError(f"--eval-data: cannot read {args.eval_data}: {exc}") from None
    try:
        version = mw.register(
            Path(args.artifact),
            args.name,
            eval_data=eval_data,
            target=args.target,
            gates=args.gate,
            tags=_pairs(args.tag, "--tag") or None,
            alias=args.alias,
            task=args.task,
            description=args.description or "",
            format=args.format,
        )
    except GateRejected as rejected:
        _out(args, rejected.version.raw, _version_line(rejected.version))
        print(f"error: {rejected}", file=sys.stderr)
        return REJECTED
    _out(args, version.raw, _version_line(version))
    return OK


def _versions(mw: Client, args: argparse.Namespace) -> int:
    found = mw.versions(args.name)
    _out(args, [v.raw for v in found], "\n".join(_version_line(v).splitlines()[0] for v in found) or "no versions")
    return OK


def _alias(mw: Client, args: argparse.Namespace) -> int:
    moved = mw.set_alias(args.name, args.alias, args.version)
    _out(args, moved, f"{args.name}@{moved['alias']} -> v{moved['version']}")
    return OK


def _predict(mw: Client, args: argparse.Namespace) -> int:
    rows: Any
    source = args.input
    if source.endswith(".csv"):
        import pandas as pd

        try:
            rows = pd.read_csv(source)
        except (OSError, ValueError) as exc:
            raise ModelworksError(f"cannot read {source}: {exc}") from None
    else:
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
            rows = json.loads(text)
        except OSError as exc:
            raise ModelworksError(f"cannot read {source}: {exc.strerror}") from None
        except ValueError as exc:
            raise ModelworksError(f"{source}: not valid JSON ({exc})") from None
        if isinstance(rows, dict):
            rows = rows.get("instances", rows.get("inputs", rows))
    answer = mw.predict(args.name, rows, key=args.key, version=args.version, alias=args.alias)
    data = {**answer.attrs, "rows": json.loads(answer.to_json(orient="records", double_precision=15))}
    _out(args, data, answer.to_csv(index=False).rstrip("\n"))
    return OK


def _rollout_line(rollout: Rollout) -> str:
    where = f"stage {rollout.stage_index + 1} of {len(rollout.stages)} ({rollout.candidate_percent:g}% to v" \
            f"{rollout.candidate})" if rollout.status in ("running", "paused") else ""  # fmt: skip
    reason = f": {rollout.reason}" if rollout.reason else ""
    return f"rollout {rollout.id} of {rollout.model} v{rollout.candidate} (baseline v{rollout.baseline}): " \
           f"{rollout.status} {where}".rstrip() + reason  # fmt: skip


def _rollout(mw: Client, args: argparse.Namespace) -> int:
    stages = None
    if args.stages:
        try:
            stages = [int(p) for p in args.stages.split(",") if p.strip()]
        except ValueError:
            raise ModelworksError(f"--stages: expected percentages like 10,50,100, got {args.stages!r}") from None
    analysis = {k: float(v) for k, v in _pairs(args.analysis, "--analysis").items()}
    rollout = mw.rollout(args.name, args.version, stages=stages, stage_seconds=args.stage_seconds, mode=args.mode,
                         shadow_percent=args.shadow_percent, analysis=analysis or None)  # fmt: skip
    if not args.wait:
        _out(args, rollout.raw, _rollout_line(rollout))
        return OK
    if not args.json:
        print(_rollout_line(rollout), flush=True)
    try:
        rollout = mw.wait_for_rollout(rollout.id, timeout=args.timeout, poll=args.poll)
    except RolloutTimeout as exc:
        _out(args, exc.rollout.raw, _rollout_line(exc.rollout))
        print(f"error: {exc}", file=sys.stderr)
        return PAUSED
    _out(args, rollout.raw, _rollout_line(rollout))
    if rollout.status == "promoted":
        return OK
    print(f"error: rollout {rollout.id} {rollout.status.replace('_', ' ')}: {rollout.reason}", file=sys.stderr)
    return PAUSED if rollout.status == "paused" else ROLLED_BACK


def _rollback(mw: Client, args: argparse.Namespace) -> int:
    done = mw.rollback(args.name)
    _out(args, done, f"{args.name}: v{done['taken_out']} taken out, v{done['serving']} serving")
    return OK


def _feedback(mw: Client, args: argparse.Namespace) -> int:
    if not args.request_id and not args.routing_key:
        raise ModelworksError("give --request-id, or --routing-key (and --time)")
    recorded = mw.feedback(args.request_id, _value(args.actual), routing_key=args.routing_key, model=args.model,
                           time=args.time)  # fmt: skip
    _out(args, recorded, ", ".join(f"{k} {v}" for k, v in recorded.items()))
    return OK


def _download(mw: Client, args: argparse.Namespace) -> int:
    data, version = mw.download(args.ref)
    target = Path(args.output or f"{version.model}-v{version.version}.{version.format}")
    try:
        target.write_bytes(data)
    except OSError as exc:
        raise ModelworksError(f"cannot write {target}: {exc.strerror}") from None
    info = {"path": str(target), "model": version.model, "version": version.version, "format": version.format,
            "sha256": version.sha256, "size_bytes": len(data)}  # fmt: skip
    _out(args, info, f"{target}: {version.ref}, {len(data)} bytes, sha256 {version.sha256} (verified)")
    return OK


def _batch_line(job: dict[str, Any]) -> str:
    progress = job["progress"]
    line = (f"batch job {job['id']} of {job['model']} v{job['version']}: {job['status']}, "
            f"{progress['rows_done']}/{progress['rows_total'] if progress['rows_total'] is not None else '?'} rows, "
            f"{progress['rows_rejected']} rejected")  # fmt: skip
    return (
        line
        + (f" -> {job['manifest']}" if job["status"] == "succeeded" else "")
        + (f": {job['error']}" if job["error"] else "")
    )


def _batch(mw: Client, args: argparse.Namespace) -> int:
    job = mw.batch_job(args.name, args.input, args.output, version=args.version, input_format=args.format,
                       passthrough=args.passthrough, chunk_rows=args.chunk_rows)  # fmt: skip
    if args.wait:
        job = mw.wait_for_batch_job(job["id"], timeout=args.timeout, poll=args.poll)
    _out(args, job, _batch_line(job))
    return OK if job["status"] in ("succeeded", "pending", "running") else ROLLED_BACK


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help="the platform (default: $MODELWORKS_URL)")
    common.add_argument("--token", default=argparse.SUPPRESS, help="API key or token (default: $MODELWORKS_TOKEN)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="answer in JSON")
    parser = argparse.ArgumentParser(prog="modelworks", description="Register, serve and roll out models.")
    parser.add_argument("--url", default=None, help="the platform (default: $MODELWORKS_URL)")
    parser.add_argument("--token", default=None, help="API key or token (default: $MODELWORKS_TOKEN)")
    parser.add_argument("--json", action="store_true", default=False, help="answer in JSON")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Any, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(run=run)
        return sub

    sub = command("register", _register, "register an artifact file as the model's next version (exit 3: rejected)")
    sub.add_argument("name")
    sub.add_argument("artifact", help="a .skops, .onnx or .joblib file")
    sub.add_argument("--eval-data", help="CSV of features and the target: the platform computes the metrics")
    sub.add_argument("--target", default="target", help="the target column of --eval-data (default: target)")
    sub.add_argument("--gate", action="append", help='a quality-gate rule, e.g. "accuracy >= 0.9" (repeatable)')
    sub.add_argument("--tag", action="append", help="KEY=VALUE (repeatable)")
    sub.add_argument("--alias", help="point this alias at the version once it passed its gates")
    sub.add_argument("--task", choices=["classification", "regression"], help="for a new model (else inferred)")
    sub.add_argument("--description")
    sub.add_argument("--format", choices=["skops", "onnx", "joblib"])

    sub = command("versions", _versions, "list a model's versions")
    sub.add_argument("name")

    sub = command("alias", _alias, "point an alias at a version")
    sub.add_argument("name")
    sub.add_argument("alias")
    sub.add_argument("version", help="3, models:/name/3 or models:/name@alias")

    sub = command("predict", _predict, "predict for rows from a CSV or JSON file, or JSON on stdin (-)")
    sub.add_argument("name")
    sub.add_argument("input", help="rows.csv, rows.json ([{feature: value}, ...]) or - for stdin")
    sub.add_argument("--key", help="routing key")
    sub.add_argument("--version", help="pin a version")
    sub.add_argument("--alias", help="pin an alias")

    sub = command("rollout", _rollout, "start a staged rollout (--wait: exit 0 promoted, 4 rolled back, 5 paused)")
    sub.add_argument("name")
    sub.add_argument("version", help="3, models:/name/3 or models:/name@alias")
    sub.add_argument("--stages", help="candidate percent per stage, e.g. 10,25,50,100")
    sub.add_argument("--stage-seconds", type=int, default=300)
    sub.add_argument("--mode", choices=["canary", "shadow"], default="canary")
    sub.add_argument("--shadow-percent", type=float, default=0.0)
    sub.add_argument("--analysis", action="append", help="threshold override KEY=NUMBER, e.g. min_requests=50")
    sub.add_argument("--wait", action="store_true", help="wait until it is promoted, rolled back or paused")
    sub.add_argument("--timeout", type=float, default=3600, help="seconds --wait waits (then exit 5)")
    sub.add_argument("--poll", type=float, default=2.0, help="seconds between status checks")

    sub = command("rollback", _rollback, "put the previous production version back")
    sub.add_argument("name")

    sub = command("feedback", _feedback, "send the actual outcome of a prediction")
    sub.add_argument("--request-id")
    sub.add_argument("--routing-key")
    sub.add_argument("--time", help="ISO time of the prediction (with --routing-key)")
    sub.add_argument("--actual", required=True, help="the true label or value (JSON or text)")
    sub.add_argument("--model")

    sub = command("batch", _batch, "score a file or prefix (CSV/Parquet; local, s3://, az://) as a batch job")
    sub.add_argument("name")
    sub.add_argument("input", help="a path, artifacts:..., s3://bucket/key or az://container/path")
    sub.add_argument("output", help="where the Parquet parts, rejects.csv and _manifest.json go")
    sub.add_argument("--version", help="3 or models:/name@alias (default: production, resolved at the start)")
    sub.add_argument("--format", choices=["parquet", "csv"])
    sub.add_argument("--passthrough", action="append", help="a column copied to the output, e.g. an id (repeatable)")
    sub.add_argument("--chunk-rows", type=int)
    sub.add_argument("--wait", action="store_true", help="wait until it finished (exit 4 when it failed)")
    sub.add_argument("--timeout", type=float, default=24 * 3600)
    sub.add_argument("--poll", type=float, default=2.0)

    sub = command("download", _download, "download a version's artifact, verified against its sha256")
    sub.add_argument("ref", help="models:/name/3 or models:/name@alias")
    sub.add_argument("-o", "--output", help="file to write (default: NAME-vN.FORMAT)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the return value is the process's exit code."""
    args = _parser().parse_args(argv)
    try:
        with Client(args.url, args.token) as mw:
            return args.run(mw, args)
    except ModelworksError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return ERROR


if __name__ == "__main__":
    sys.exit(main())
