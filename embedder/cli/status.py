"""``embedder status LEDGER [--json]``: progress of a job from its checkpoint folder, also while it runs.

Reads only the ledger (fingerprint, plan, done markers, heartbeat, run report); it never talks to the API, the
sinks or Ray, so it works from any machine that can read the folder.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from typing import Any

STALE_AFTER_S = 30.0
"""A heartbeat older than this means the driver is not running any more (it beats every few seconds)."""
LIVE_COUNTERS = (("shards_in_flight", "in flight"), ("requests", "requests"), ("retries", "retries"),
                 ("rate_limited", "429s"))
"""Heartbeat counters shown on the ``live`` line while a job runs."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ledger", metavar="LEDGER",
                        help="checkpoint folder: a local path or a URI such as s3://bucket/job/_checkpoint")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--stale-after", type=float, default=STALE_AFTER_S, metavar="SECONDS",
                        help=f"heartbeat age after which the job counts as stopped (default {STALE_AFTER_S:g})")


def run(args: argparse.Namespace) -> int:
    from embedder.ledger.checkpoint import Ledger  # pyarrow only when the command runs

    ledger = Ledger.load(args.ledger)
    status = collect(ledger, stale_after=getattr(args, "stale_after", STALE_AFTER_S))
    print(json.dumps(status, indent=None, default=str) if args.json else format_status(status))
    return 0


def collect(ledger: Any, *, stale_after: float = STALE_AFTER_S, now: float | None = None) -> dict[str, Any]:
    """Everything ``status`` shows, as one JSON-ready dict."""
    now = time.time() if now is None else now
    fingerprint = ledger.read_fingerprint() or {}
    plan = ledger.read_plan()
    markers = ledger.done_markers()
    planned = set(plan["shard_ids"]) if plan and plan.get("shard_ids") is not None else None
    in_plan = [m for m in markers if planned is None or m.get("shard_id") in planned]
    done = {
        "shards": len(in_plan),
        "rows": sum(_int(m.get("rows", _int(m.get("embedded")) + _int(m.get("failed")))) for m in in_plan),
        "embedded": sum(_int(m.get("embedded")) for m in in_plan),
        "failed": sum(_int(m.get("failed")) for m in in_plan),
        "tokens": sum(_int(m.get("tokens")) for m in in_plan),
        "outside_plan": len(markers) - len(in_plan),
    }
    if plan is not None:
        plan = {k: v for k, v in plan.items() if k != "shard_ids"}
    heartbeat = ledger.read_heartbeat()
    if heartbeat is not None:
        heartbeat = {**heartbeat, "age_s": round(now - float(heartbeat.get("unix_time", now)), 1)}
    report = ledger.read_report()
    state, finished = _state(heartbeat, report, plan, stale_after)
    speed = (_speed(report) if finished else None) or (_speed(heartbeat) if heartbeat else None)
    status: dict[str, Any] = {
        "ledger": ledger.location,
        "state": state,
        "fingerprint": fingerprint.get("fingerprint"),
        "fields": fingerprint.get("fields", {}),
        "created_at": fingerprint.get("created_at"),
        "embedder_version": fingerprint.get("embedder_version"),
        "plan": plan,
        "done": done,
        "progress": {
            "shards_pct": _pct(done["shards"], plan.get("shards") if plan else None),
            "rows_pct": _pct(done["rows"], plan.get("rows") if plan else None),
        },
        "heartbeat": heartbeat,
        "speed": speed,
        "report": report,
    }
    total_rows = (plan or {}).get("rows")
    if state != "running" and speed:
        speed.pop("eta_s", None)
    elif speed and speed.get("eta_s") is None and speed.get("rows_per_s") and total_rows:
        speed["eta_s"] = round(max(0, _int(total_rows) - done["rows"]) / speed["rows_per_s"])
    return status


def format_status(status: dict[str, Any]) -> str:
    """A few aligned lines for people."""
    from embedder.ledger.checkpoint import flatten_fields

    plan, done, progress = status["plan"] or {}, status["done"], status["progress"]
    lines = [("ledger", status["ledger"])]
    settings = ", ".join(f"{k}={v if isinstance(v, str | int | float) else json.dumps(v)}"
                         for k, v in flatten_fields(status["fields"]).items())
    lines.append(("job", f"{settings or '-'}  (fingerprint {str(status['fingerprint'])[:12]})"))
    lines.append(("state", _describe_state(status)))
    if plan:
        lines.append(("shards", f"{done['shards']:,} / {_int(plan.get('shards')):,} done"
                                f"{_fmt_pct(progress['shards_pct'])}"))
        lines.append(("rows", f"{done['rows']:,} / {_int(plan.get('rows')):,}{_fmt_pct(progress['rows_pct'])}"
                              + (f"  in {_int(plan['files']):,} files" if plan.get("files") else "")))
    else:
        lines.append(("shards", f"{done['shards']:,} done (no plan written yet)"))
    lines.append(("embedded", f"{done['embedded']:,}   failed {done['failed']:,}"
                              f"{_fmt_pct(_pct(done['failed'], done['rows']), digits=2)}"))
    lines.append(("tokens", f"{done['tokens']:,}"))
    if done["outside_plan"]:
        lines.append(("note", f"{done['outside_plan']:,} done markers belong to shards outside the latest plan"))
    speed = status["speed"]
    if speed:
        parts = [f"{speed['rows_per_s']:,.1f} rows/s" if speed.get("rows_per_s") is not None else "",
                 f"{_short(speed['tokens_per_min'])} tokens/min" if speed.get("tokens_per_min") is not None
                 else "", f"eta {_duration(speed['eta_s'])}" if speed.get("eta_s") is not None else ""]
        lines.append(("speed", "   ".join(p for p in parts if p) or "-"))
    beat = status["heartbeat"]
    if beat and status["state"] == "running":
        live = [f"{label} {_int(beat[key]):,}" for key, label in LIVE_COUNTERS if beat.get(key) is not None]
        if live:
            lines.append(("live", "   ".join(live)))
    if status["report"]:
        lines.extend(_report_lines(status["report"]))
    width = max(len(label) for label, _ in lines)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in lines)


def _report_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    summary = [f"{report.get('status', 'finished')} at {report.get('finished_at', '?')}"]
    if report.get("elapsed_s") is not None:
        summary.append(f"took {_duration(float(report['elapsed_s']))}")
    if report.get("cost_usd") is not None:
        summary.append(f"cost ${float(report['cost_usd']):,.4f}")
    lines = [("report", ", ".join(summary))]
    for output in report.get("outputs") or []:
        if isinstance(output, dict):
            lines.append(("output", f"{output.get('location', '?')}  ({_int(output.get('rows')):,} rows"
                                    f", {_int(output.get('parts')):,} parts)"))
    if report.get("error"):
        lines.append(("error", str(report["error"])))
    return lines


def _state(heartbeat: dict | None, report: dict | None, plan: dict | None,
           stale_after: float) -> tuple[str, bool]:
    """The job's state, and whether the run report describes it (the last run ended)."""
    beat_at = float(heartbeat.get("unix_time", 0)) if heartbeat else None
    if report is not None:
        report_at = _timestamp(report.get("finished_at"))
        if beat_at is None or report_at is None or report_at >= beat_at - 1:  # report written after the last beat
            return str(report.get("status") or "finished"), True
    if heartbeat is not None:
        return ("running" if heartbeat["age_s"] <= stale_after else "stopped"), False
    return ("planned" if plan is not None else "not started"), False


def _describe_state(status: dict[str, Any]) -> str:
    state, beat = status["state"], status["heartbeat"]
    if state == "running":
        return f"running (heartbeat {beat['age_s']:.0f}s ago, {beat.get('host', '?')} pid {beat.get('pid', '?')})"
    if state == "stopped":
        return (f"stopped: no heartbeat for {_duration(beat['age_s'])} and no run report "
                "(interrupted? rerun the same command to resume)")
    return state


def _speed(counters: dict[str, Any]) -> dict[str, Any] | None:
    """Rates from a heartbeat or a report: given directly, or derived from totals and ``elapsed_s``."""
    if isinstance(counters.get("progress"), dict):  # a run report keeps the driver's counters there
        counters = {**counters["progress"], **counters}
    rows_per_s = counters.get("rows_per_s")
    tokens_per_min = next((counters[k] for k in ("tokens_per_min", "tokens_per_minute", "tokens_last_minute")
                           if counters.get(k) is not None), None)
    rows = counters.get("rows_done", counters.get("rows"))
    elapsed = counters.get("elapsed_s")
    if elapsed:
        if rows_per_s is None and rows is not None:
            rows_per_s = _int(rows) / float(elapsed)
        if tokens_per_min is None and counters.get("tokens") is not None:
            tokens_per_min = _int(counters["tokens"]) / float(elapsed) * 60
    if rows_per_s is None and tokens_per_min is None:
        return None
    speed = {"rows_per_s": None if rows_per_s is None else round(float(rows_per_s), 1),
             "tokens_per_min": None if tokens_per_min is None else round(float(tokens_per_min))}
    if counters.get("eta_s") is not None:
        speed["eta_s"] = round(float(counters["eta_s"]))
    return speed


def _timestamp(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _pct(part: int, whole: Any) -> float | None:
    whole = _int(whole)
    return round(100.0 * part / whole, 2) if whole else None


def _fmt_pct(pct: float | None, digits: int = 1) -> str:
    return "" if pct is None else f"  ({pct:.{digits}f}%)"


def _short(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else (f"{minutes}m {secs:02d}s" if minutes else f"{secs}s")
