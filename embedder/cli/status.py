"""``embedder status LEDGER [--json]``: progress of a job from its checkpoint folder, also while it runs.

Reads only the ledger (fingerprint, plan, done markers, heartbeat, run report); it never talks to the API, the
sinks or Ray, so it works from any machine that can read the folder.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from embedder import humanize

if TYPE_CHECKING:
    from embedder.ledger import Heartbeat, Ledger, RunReport

STALE_AFTER_S = 30.0
"""A heartbeat older than this means the driver is not running any more (it beats every few seconds)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ledger", metavar="LEDGER",
                        help="checkpoint folder: a local path or a URI such as s3://bucket/job/_checkpoint")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--stale-after", type=float, default=STALE_AFTER_S, metavar="SECONDS",
                        help=f"heartbeat age after which the job counts as stopped (default {STALE_AFTER_S:g})")
    parser.add_argument("--s3-endpoint", default="", metavar="URL",
                        help="endpoint of an S3-compatible store holding the ledger (else $AWS_ENDPOINT_URL)")


def run(args: argparse.Namespace) -> int:
    from embedder.ledger import Ledger  # pyarrow only when the command runs

    endpoint = getattr(args, "s3_endpoint", "")
    ledger = Ledger.load(args.ledger, storage_options={"endpoint_override": endpoint} if endpoint else None)
    status = collect(ledger, stale_after=getattr(args, "stale_after", STALE_AFTER_S))
    print(json.dumps(status, indent=None, default=str) if args.json else format_status(status))
    return 0


def collect(ledger: Ledger, *, stale_after: float = STALE_AFTER_S, now: float | None = None) -> dict[str, Any]:
    """Everything ``status`` shows, as one JSON-ready dict."""
    now = time.time() if now is None else now
    fingerprint = ledger.read_fingerprint() or {}
    plan = ledger.read_plan()
    planned = set(plan["shard_ids"]) if plan and plan.get("shard_ids") is not None else None
    if plan is not None:
        plan = {k: v for k, v in plan.items() if k != "shard_ids"}
    heartbeat, report = ledger.read_heartbeat(), ledger.read_report()
    age = None if heartbeat is None else round(now - heartbeat.unix_time, 1)
    state, finished = _state(heartbeat, age, report, plan, stale_after)
    done = _done(ledger, planned)
    return {
        "ledger": ledger.location, "state": state, "fingerprint": fingerprint.get("fingerprint"),
        "fields": fingerprint.get("fields", {}), "created_at": fingerprint.get("created_at"),
        "embedder_version": fingerprint.get("embedder_version"), "plan": plan, "done": done,
        "progress": {"shards_pct": _pct(done["shards"], (plan or {}).get("shards")),
                     "rows_pct": _pct(done["rows"], (plan or {}).get("rows"))},
        "heartbeat": None if heartbeat is None else {**heartbeat.to_dict(), "age_s": age},
        "speed": _speed(report if finished else None, heartbeat, running=state == "running"),
        "report": None if report is None else report.to_dict(),
    }


def _done(ledger: Ledger, planned: set[str] | None) -> dict[str, int]:
    markers = ledger.done_markers()
    in_plan = [m.stats for m in markers if planned is None or m.shard_id in planned]
    return {"shards": len(in_plan), "rows": sum(s.rows for s in in_plan),
            "embedded": sum(s.embedded for s in in_plan), "failed": sum(s.failed for s in in_plan),
            "tokens": sum(s.tokens for s in in_plan), "outside_plan": len(markers) - len(in_plan)}


def _state(heartbeat: Heartbeat | None, age: float | None, report: RunReport | None, plan: dict | None,
           stale_after: float) -> tuple[str, bool]:
    """The job's state, and whether the run report describes it (the last run ended)."""
    if report is not None:
        report_at = _timestamp(report.finished_at)
        if heartbeat is None or report_at is None or report_at >= heartbeat.unix_time - 1:  # after the last beat
            return report.status, True
    if heartbeat is not None and age is not None:
        return ("running" if age <= stale_after else "stopped"), False
    return ("planned" if plan is not None else "not started"), False


def _speed(report: RunReport | None, heartbeat: Heartbeat | None, *, running: bool) -> dict[str, Any] | None:
    """The rates of the run that ended (its report), else of the run going on (its heartbeat)."""
    if report is not None:
        return {"rows_per_s": report.progress.rows_per_s, "tokens_per_min": round(report.tokens_per_minute)}
    if heartbeat is None:
        return None
    progress = heartbeat.progress
    speed: dict[str, Any] = {"rows_per_s": progress.rows_per_s, "tokens_per_min": progress.tokens_last_minute}
    if running and progress.eta_s is not None:
        speed["eta_s"] = round(progress.eta_s)
    return speed


def format_status(status: dict[str, Any]) -> str:
    """A few aligned lines for people."""
    from embedder.ledger import flatten_fields

    plan, done, progress = status["plan"] or {}, status["done"], status["progress"]
    lines = [("ledger", status["ledger"])]
    settings = ", ".join(f"{k}={v if isinstance(v, str | int | float) else json.dumps(v)}"
                         for k, v in flatten_fields(status["fields"]).items())
    lines.append(("job", f"{settings or '-'}  (fingerprint {str(status['fingerprint'])[:12]})"))
    lines.append(("state", _describe_state(status)))
    if plan:
        lines.append(("shards", f"{done['shards']:,} / {int(plan.get('shards') or 0):,} done"
                                f"{_fmt_pct(progress['shards_pct'])}"))
        lines.append(("rows", f"{done['rows']:,} / {int(plan.get('rows') or 0):,}{_fmt_pct(progress['rows_pct'])}"
                              + (f"  in {int(plan['files']):,} files" if plan.get("files") else "")))
    else:
        lines.append(("shards", f"{done['shards']:,} done (no plan written yet)"))
    lines.append(("embedded", f"{done['embedded']:,}   failed {done['failed']:,}"
                              f"{_fmt_pct(_pct(done['failed'], done['rows']), digits=2)}"))
    lines.append(("tokens", f"{done['tokens']:,}"))
    if done["outside_plan"]:
        lines.append(("note", f"{done['outside_plan']:,} done markers belong to shards outside the latest plan"))
    lines.extend(_speed_lines(status))
    if status["report"]:
        lines.extend(_report_lines(status["report"]))
    width = max(len(label) for label, _ in lines)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in lines)


def _speed_lines(status: dict[str, Any]) -> list[tuple[str, str]]:
    lines = []
    speed = status["speed"]
    if speed:
        parts = [f"{speed['rows_per_s']:,.1f} rows/s", f"{humanize.count(speed['tokens_per_min'])} tokens/min"]
        if speed.get("eta_s") is not None:
            parts.append(f"eta {humanize.duration(speed['eta_s'])}")
        lines.append(("speed", "   ".join(parts)))
    beat = status["heartbeat"]
    if beat and status["state"] == "running":
        lines.append(("live", f"in flight {beat['shards_in_flight']:,}   requests {beat['requests']:,}   "
                              f"retries {beat['retries']:,}   429s {beat['rate_limited']:,}"))
    return lines


def _report_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    summary = [f"{report['status']} at {report['finished_at'] or '?'}",
               f"took {humanize.duration(report['elapsed_s'])}", f"cost {humanize.dollars(report['cost_usd'])}"]
    lines = [("report", ", ".join(summary))]
    for output in report["outputs"]:
        lines.append(("output", f"{output.get('location', '?')}  ({int(output.get('rows') or 0):,} rows"
                                f", {int(output.get('parts') or 0):,} parts)"))
    if report["error"]:
        lines.append(("error", str(report["error"])))
    return lines


def _describe_state(status: dict[str, Any]) -> str:
    state, beat = status["state"], status["heartbeat"]
    if state == "running":
        return f"running (heartbeat {beat['age_s']:.0f}s ago, {beat['host'] or '?'} pid {beat['pid'] or '?'})"
    if state == "stopped":
        return (f"stopped: no heartbeat for {humanize.duration(beat['age_s'])} and no run report "
                "(interrupted? rerun the same command to resume)")
    return str(state)


def _timestamp(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _pct(part: int, whole: Any) -> float | None:
    whole = int(whole or 0)
    return round(100.0 * part / whole, 2) if whole else None


def _fmt_pct(pct: float | None, digits: int = 1) -> str:
    return "" if pct is None else f"  ({pct:.{digits}f}%)"
