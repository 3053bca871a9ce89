"""Reports of a crash exploration: a terminal summary, JSON, JUnit XML, and an HTML timeline."""

from __future__ import annotations

import html
import json

from rich.markup import escape
from xml.etree import ElementTree as ET


def print_summary(res, out=None, limit: int = 5) -> None:
    from rich.console import Console

    con = Console(file=out, highlight=False)
    sps = res.states_checked / res.seconds if res.seconds else 0
    con.print(f"[bold]{res.protocol}[/] / {res.barrier}, seed {res.seed}, {res.ops} ops: "
              f"{res.crash_points} crash points, {res.states_enumerated} legal crash states, "
              f"checked as {res.states_checked} equivalence classes ({sps:.0f}/s), coverage {res.coverage:.3f}, "
              + ("[green]0 illegal[/]" if res.ok else f"[red]{res.illegal} illegal[/]"))
    for note in res.notes:
        con.print(f"  note: {escape(note)}")
    for f in res.failures[:limit]:
        con.print(f"  [red]illegal[/] state {f.state} at crash point {f.point}: {escape(f.reason)}")
        for line in f.explanation:
            con.print(f"      {escape(line)}")
    if res.illegal > limit:
        con.print(f"  ... {res.illegal - limit} more illegal states (see --json)")


def print_ablation(rows, out=None) -> None:
    from rich.console import Console

    con = Console(file=out, highlight=False)
    for r in rows:
        if r["caught"]:
            con.print(f"[green]caught[/]   {r['site']}: {r['illegal']} illegal states ({r['workload']} "
                      f"workload, seed {r['seed']}): "
                      f"{escape(r['example'][0])}")
        else:
            con.print(f"[yellow]not caught[/] {r['site']}: unnecessary, or a gap in the workloads "
                      f"(see docs/protocols.md)")


def write_json(res, path: str) -> None:
    with open(path, "w") as f:
        json.dump(res.to_json(), f, indent=2)


def write_junit(res, path: str) -> None:
    """One test case per crash point; a failing point carries its first illegal state's reason."""
    reasons = {f.point: f for f in res.failures}
    suite = ET.Element("testsuite", name=f"crashtest.{res.protocol}.{res.barrier}.seed{res.seed}",
                       tests=str(len(res.points)), failures=str(len(res.failing_points)),
                       time=f"{res.seconds:.3f}")
    for pi, label, legal in res.points:
        case = ET.SubElement(suite, "testcase", classname=f"crashtest.{res.protocol}.{res.barrier}",
                             name=f"P{pi} {label}")
        if not legal:
            f = reasons.get(pi)
            fail = ET.SubElement(case, "failure", message=f.reason if f else "illegal crash state")
            if f:
                fail.text = "\n".join([f"state {f.state}"] + f.explanation)
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


ROLE_COLOURS = (("journal", "#4e79a7"), ("data", "#59a14f"), ("used list", "#f28e2b"), ("origin", "#e15759"),
                ("map node", "#b07aa1"), ("bitmap", "#edc948"), ("object map", "#76b7b2"),
                ("checkpoint", "#9c755f"), ("superblock", "#bab0ac"))


def _colour(role: str) -> str:
    for key, c in ROLE_COLOURS:
        if key in role:
            return c
    return "#999999"


def write_html(res, space, path: str) -> None:
    """A timeline of the recorded run: writes by role, flushes, FUA, marks; failing cuts in red."""
    failing = set(res.failing_points)
    ops = space.ops
    point_of_seq = {}
    for p in space.points:
        if p.op is not None and not p.inflight:
            point_of_seq[p.op.seq] = p.index
    w, rowh = 6, 18
    width = max(400, len(ops) * w + 40)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{rowh * 6 + 40}" '
             f'font-family="sans-serif" font-size="11">']
    lanes = {"write": 0, "fua": 1, "flush": 2, "mark": 3, "discard": 0}
    for name, lane in (("writes", 0), ("FUA", 1), ("flush", 2), ("marks", 3), ("cuts", 4)):
        parts.append(f'<text x="2" y="{lane * rowh + 32}">{name}</text>')
    for i, op in enumerate(ops):
        x = 40 + i * w
        lane = lanes.get(op.kind, 0)
        colour = {"flush": "#000", "mark": "#888"}.get(op.kind, _colour(op.role))
        title = html.escape(op.describe())
        parts.append(f'<rect x="{x}" y="{lane * rowh + 20}" width="{w - 1}" height="{rowh - 4}" fill="{colour}">'
                     f'<title>{title}</title></rect>')
        pi = point_of_seq.get(op.seq)
        if pi is not None:
            colour = "#d62728" if pi in failing else "#2ca02c"
            parts.append(f'<rect x="{x}" y="{4 * rowh + 20}" width="{w - 1}" height="{rowh - 4}" fill="{colour}">'
                         f'<title>crash point {pi}: {"ILLEGAL" if pi in failing else "legal"}</title></rect>')
    parts.append("</svg>")
    legend = " ".join(f'<span style="background:{c};padding:0 6px">&nbsp;</span> {k}' for k, c in ROLE_COLOURS)
    rows = "".join(f"<li><b>{html.escape(f.state)}</b> at point {f.point}: {html.escape(f.reason)}<br>"
                   + "<br>".join(html.escape(x) for x in f.explanation) + "</li>" for f in res.failures[:50])
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>blkjournal crash exploration</title></head>
<body><h1>{html.escape(res.protocol)} / {html.escape(res.barrier)}, seed {res.seed}, {res.ops} ops</h1>
<p>{res.crash_points} crash points, {res.states_enumerated} states enumerated, {res.states_checked} checked,
coverage {res.coverage:.3f}, <b>{res.illegal} illegal</b>.</p>
<p>{legend}</p><div style="overflow-x:auto">{''.join(parts)}</div>
<p>Bottom lane: crash points (green legal, red illegal). Hover for details.</p>
<h2>Illegal states</h2><ol>{rows}</ol></body></html>"""
    with open(path, "w") as f:
        f.write(doc)
