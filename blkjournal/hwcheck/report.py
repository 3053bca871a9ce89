"""Text rendering of a verify report: context, counts, loss histogram, violations, verdict last.

Plain text (no rich markup) because it is read on VM serial consoles and in CI logs; the
verdict is the last line, so `tail -n1` (or a grep for ^honest / ^lies) is the whole answer.
"""

from __future__ import annotations

from .verify import ALLOWED, LOST, TORN, VIOLATIONS, Report, runs_text

LIMIT = 20


def _ended(report: Report) -> str:
    end = report.log.end
    if end is None:
        return "no end record: the writer was cut off (power loss or kill)"
    why = end.get("reason", "?")
    if why == "io-error":
        return f"the writer stopped at an I/O error (the power cut?): {end.get('error')}"
    return f"the writer stopped as asked ({why}), no power cut during the run" + (
        f": {end['error']}" if end.get("error") else "")


def render(report: Report, limit: int = LIMIT) -> str:
    h, log, c = report.log.header, report.log, report.counts
    pf = h.preflight
    lines = [
        f"run {h.run:016x} on {h.device}: blocks {h.start}..{h.start + h.length - 1}, barrier {h.barrier}, "
        f"batch {h.batch}, {h.threads} writer(s), atomic unit {h.atomic} B",
    ]
    if pf:
        lines.append(f"disk: write cache {pf.get('write_cache') or 'unknown'}, FUA {pf.get('fua_mode') or 'unknown'}, "
                     f"model {pf.get('model') or 'unknown'}, firmware {pf.get('firmware') or 'unknown'}")
    span = ""
    if log.first_ack_ns is not None and log.last_ack_ns is not None:
        span = f" over {(log.last_ack_ns - log.first_ack_ns) / 1e9:.1f} s"
    lines.append(f"log: {log.acks} acked writes{span} to {report.acked_blocks} blocks; {_ended(report)}"
                 + ("; last log line torn (ignored)" if log.torn_tail else ""))
    lines.append("allowed:    " + ", ".join(f"{k} {c[k]}" for k in ALLOWED))
    lines.append("violations: " + ", ".join(f"{k} {c[k]}" for k in VIOLATIONS))
    if c[LOST] + c[TORN]:
        lines.append("acked writes lost, by age before the cut (the last ack):")
        for b in report.histogram:
            if b.acked:
                lines.append(f"  {b.label:>12}  acked {b.acked:>7}  lost {b.lost:>7}  ({100 * b.lost / b.acked:.0f}%)")
    bad = [f for f in report.findings if f.kind in VIOLATIONS]
    if bad:
        lines.append(f"violations ({min(limit, len(bad))} of {len(bad)} shown):")
        for f in bad[:limit]:
            age = f", acked {f.ack_age_s:.3f} s before the cut" if f.ack_age_s is not None else ""
            lines.append(f"  block {f.block}: {f.kind}: {f.detail} [holds {runs_text(f.seen)}{age}]")
    lines.append(report.verdict_line())
    return "\n".join(lines)
