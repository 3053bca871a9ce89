"""Reports of a crash exploration: a terminal summary, JSON, JUnit XML and an HTML page.

Every format is rendered from one document (`report_doc`), the JSON a shard writes, so a merged
report (merge.py) renders exactly like a single run's.  Illegal states are shown as clusters by
cause (clusters.py), largest first; JUnit has one test case per cluster.  Counts too large to read
(a `grow` run has about 10^1211 legal crash states) are written as ≈ 2.2e1211 in text and HTML;
JSON keeps the exact integer.
"""

from __future__ import annotations

import html
import json
import math
import platform
import sys
from xml.etree import ElementTree as ET

from rich.markup import escape

from .merge import MAX_COUNT_DIGITS, REPORT_FORMAT

READABLE_DIGITS = 15  # beyond this many digits a count is shown as mantissa and exponent


def approx(n) -> str:
    """A count for people: 12,345 as is, 10^1211-ish as '≈ 2.2e1211' (no int->str of huge ints)."""
    if isinstance(n, float):
        return f"{n:.3g}"
    if n < 10 ** READABLE_DIGITS:
        return f"{n:,}"
    e = math.log10(n)
    exp = math.floor(e)
    mant = 10 ** (e - exp)
    if round(mant, 1) >= 10:
        mant, exp = mant / 10, exp + 1
    return f"≈ {mant:.1f}e{exp}"


# ---------------------------------------------------------------- the document
def report_doc(res) -> dict:
    """The JSON report of one run (or shard): totals, identity, clusters, failures, timeline."""
    if isinstance(res, dict):  # already a document (a merged report)
        return res
    d = res.to_json()
    d["format"] = REPORT_FORMAT
    d["kernel"] = res.kernel or platform.release()
    space = getattr(res, "space", None)
    if space is not None:
        d["timeline"] = timeline(space, res)
    return d


def timeline(space, res) -> dict:
    """The log in submission order (kind, role, text) and the checked crash points on it."""
    ops = [[op.kind, op.role, op.describe()] for op in space.ops]
    index_of_seq = {op.seq: i for i, op in enumerate(space.ops)}
    legal = {p: ok for p, _label, ok in res.points}
    cuts = []
    for p in space.points:
        if p.index in legal and p.op is not None and not p.inflight and p.op.seq in index_of_seq:
            cuts.append([index_of_seq[p.op.seq], p.index, legal[p.index]])
    return {"ops": ops, "cuts": cuts}


def _doc(r) -> dict:
    return r if isinstance(r, dict) else report_doc(r)


def write_json(r, path: str) -> None:
    sys.set_int_max_str_digits(MAX_COUNT_DIGITS)
    with open(path, "w") as f:
        json.dump(_doc(r), f, indent=1)


# ---------------------------------------------------------------- text
def print_summary(r, out=None, limit: int = 5) -> None:
    from rich.console import Console

    d = _doc(r)
    con = Console(file=out, highlight=False)
    sps = d.get("states_per_second") or 0
    ok = d["illegal"] == 0
    con.print(f"[bold]{d['protocol']}[/] / {d['barrier']}, seed {d['seed']}, {d['ops']} ops: "
              f"{approx(d['crash_points'])} crash points, {approx(d['states_enumerated'])} legal crash states, "
              f"checked as {approx(d['states_checked'])} equivalence classes ({sps:.0f}/s), "
              f"coverage {d['coverage']:.3f}, "
              + ("[green]0 illegal[/]" if ok else f"[red]{approx(d['illegal'])} illegal[/]"))
    for note in d.get("notes", []):
        con.print(f"  note: {escape(note)}")
    clusters = d.get("clusters", [])
    if clusters:
        con.print(f"  {len(clusters)} cause{'s' if len(clusters) != 1 else ''} (clusters of illegal classes, "
                  "largest first):")
    for n, c in enumerate(clusters[:limit], 1):
        rep = c["representative"]
        con.print(f"  [red]{n}.[/] {approx(c['count'])} classes ({approx(c['states'])} states) at "
                  f"{len(c['points'])} crash points: {escape(c['explanation'])}")
        con.print(f"      smallest: state {rep['state']} at crash point {rep['point']}: {escape(rep['reason'])}")
        for line in rep["explanation"]:
            con.print(f"        {escape(line)}")
    if len(clusters) > limit:
        rest = clusters[limit:]
        con.print(f"  ... {len(rest)} more causes ({approx(sum(c['count'] for c in rest))} classes; see --json)")


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


# ---------------------------------------------------------------- JUnit
def write_junit(r, path: str) -> None:
    """One test case per cluster of illegal states (a cause), and one for the legal crash points."""
    d = _doc(r)
    name = f"crashtest.{d['protocol']}.{d['barrier']}.seed{d['seed']}"
    clusters = d.get("clusters", [])
    suite = ET.Element("testsuite", name=name, tests=str(len(clusters) + 1), failures=str(len(clusters)),
                       time=f"{d.get('seconds') or 0:.3f}")
    props = ET.SubElement(suite, "properties")
    for k in ("crash_points", "states_checked", "states_enumerated", "coverage", "kernel"):
        ET.SubElement(props, "property", name=k, value=str(d.get(k)) if k != "states_enumerated"
                      else approx(d[k]))
    bad = len(d.get("failing_points", []))
    ET.SubElement(suite, "testcase", classname=name,
                  name=f"crash points without an illegal state ({d['crash_points'] - bad} of {d['crash_points']})")
    for n, c in enumerate(clusters, 1):
        case = ET.SubElement(suite, "testcase", classname=name, name=f"cause {n}: {c['key']}")
        fail = ET.SubElement(case, "failure", message=c["explanation"],
                             type=f"{c['count']} illegal classes")
        rep = c["representative"]
        fail.text = "\n".join([f"{c['count']} classes, {approx(c['states'])} states, crash points "
                               f"{_ranges(c['points'])}",
                               f"smallest: state {rep['state']} at crash point {rep['point']}: {rep['reason']}"]
                              + rep["explanation"])
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _ranges(points: list[int], limit: int = 12) -> str:
    runs: list[list[int]] = []
    for p in points:
        if runs and p == runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit])
    return text + (f", ... ({len(runs) - limit} more runs)" if len(runs) > limit else "")


# ---------------------------------------------------------------- HTML
ROLE_COLOURS = (("journal", "#4e79a7"), ("data", "#59a14f"), ("used list", "#f28e2b"), ("origin", "#e15759"),
                ("map node", "#b07aa1"), ("bitmap", "#edc948"), ("object map", "#76b7b2"),
                ("checkpoint", "#9c755f"), ("superblock", "#bab0ac"))
OTHER = ("other", "#999999")


def role_class(kind: str, role: str) -> tuple[str, str]:
    """(filter class, colour) of one log operation in the timeline."""
    if kind == "flush":
        return "flush", "#000000"
    if kind == "mark":
        return "mark", "#888888"
    for key, c in ROLE_COLOURS:
        if key in role:
            return key, c
    return OTHER


def _slug(name: str) -> str:
    return "r-" + name.replace(" ", "-")


CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:12px 24px} header h1{margin:0;font-size:20px}
nav{position:sticky;top:0;background:#eceff1;padding:6px 24px;border-bottom:1px solid #cfd8dc;z-index:2}
nav a{margin-right:16px;color:#1565c0;text-decoration:none}
main{padding:0 24px 40px} section{margin-top:24px}
.verdict{display:inline-block;padding:4px 10px;border-radius:4px;font-weight:bold}
.ok{background:#c8e6c9;color:#1b5e20} .bad{background:#ffcdd2;color:#b71c1c}
table.totals td{padding:2px 12px 2px 0} table.totals td:first-child{color:#555}
.cluster{background:#fff;border:1px solid #ddd;border-left:6px solid #d32f2f;border-radius:4px;
 padding:8px 12px;margin:10px 0}
.cluster h3{margin:0 0 4px;font-size:15px} .count{font-weight:bold;color:#b71c1c}
.muted{color:#666;font-size:13px} code{background:#eee;padding:0 3px;border-radius:2px}
details{margin:4px 0} summary{cursor:pointer;color:#1565c0}
#timeline-box{overflow-x:auto;border:1px solid #ccc;background:#fff}
.filters label{margin-right:10px;font-size:13px;white-space:nowrap}
.sw{display:inline-block;width:10px;height:10px;margin-right:3px}
.hidden{display:none} rect.dim{opacity:.12}
button.show-cause{font-size:12px;margin-left:8px;cursor:pointer} button.show-cause.active{background:#ffcdd2}
"""

JS = r"""
const svg=document.getElementById('timeline');
const zoom=document.getElementById('zoom');
function applyZoom(){const w=svg.dataset.width*zoom.value;svg.setAttribute('width',w);
 document.getElementById('zoomval').textContent=zoom.value+'x';}
zoom.addEventListener('input',applyZoom);
document.querySelectorAll('.filters input').forEach(cb=>cb.addEventListener('change',()=>{
 svg.querySelectorAll('.'+cb.value).forEach(el=>el.classList.toggle('hidden',!cb.checked));}));
applyZoom();
document.querySelectorAll('button.show-cause').forEach(b=>b.addEventListener('click',()=>{
 const pts=new Set(b.dataset.points.split(' '));
 const on=b.classList.toggle('active');
 document.querySelectorAll('button.show-cause').forEach(o=>{if(o!==b)o.classList.remove('active');});
 svg.querySelectorAll('rect.r-cut').forEach(r=>r.classList.toggle('dim',on&&!pts.has(r.dataset.pi)));
 if(on)document.getElementById('timeline-section').scrollIntoView();}));
const shown=location.hash.match(/^#show-cause-(\d+)$/);  // a link to one cause's crash points
if(shown){const b=document.querySelector('#cause-'+shown[1]+' button.show-cause');if(b)b.click();}
"""


def _svg(tl: dict) -> tuple[str, list[tuple[str, str]]]:
    ops, cuts = tl.get("ops", []), tl.get("cuts", [])
    w, rowh = 6, 18
    width = max(400, len(ops) * w + 60)
    lanes = {"write": 0, "discard": 0, "fua": 1, "flush": 2, "mark": 3}
    parts = [f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" data-width="{width}" width="{width}" '
             f'height="{rowh * 5 + 30}" viewBox="0 0 {width} {rowh * 5 + 30}" preserveAspectRatio="none" '
             f'font-family="sans-serif" font-size="11">']
    for name, lane in (("writes", 0), ("FUA", 1), ("flush", 2), ("marks", 3), ("cuts", 4)):
        parts.append(f'<text x="2" y="{lane * rowh + 32}">{name}</text>')
    used: dict[str, str] = {}
    for i, (kind, role, text) in enumerate(ops):
        cls, colour = role_class(kind, role)
        used.setdefault(cls, colour)
        parts.append(f'<rect class="{_slug(cls)}" x="{50 + i * w}" y="{lanes.get(kind, 0) * rowh + 20}" '
                     f'width="{w - 1}" height="{rowh - 4}" fill="{colour}"><title>{html.escape(text)}</title></rect>')
    for i, pi, legal in cuts:
        colour = "#2ca02c" if legal else "#d62728"
        parts.append(f'<rect class="r-cut {"legal" if legal else "illegal"}" data-pi="{pi}" x="{50 + i * w}" '
                     f'y="{4 * rowh + 20}" '
                     f'width="{w - 1}" height="{rowh - 4}" fill="{colour}">'
                     f'<title>crash point {pi}: {"legal" if legal else "ILLEGAL"}</title></rect>')
    parts.append("</svg>")
    return "".join(parts), sorted(used.items())


def render_html(d: dict) -> str:
    e = html.escape
    ok = d["illegal"] == 0
    title = f"{d['protocol']} / {d['barrier']}, seed {d['seed']}, {d['ops']} ops"
    run = d.get("run", {})
    totals = [("crash points", approx(d["crash_points"])),
              ("legal crash states", approx(d["states_enumerated"])),
              ("equivalence classes checked", approx(d["states_checked"])),
              ("coverage", f"{d['coverage']:.3f}"),
              ("illegal classes", approx(d["illegal"])),
              ("illegal crash states", approx(d.get("illegal_states", 0))),
              ("causes (clusters)", str(len(d.get("clusters", [])))),
              ("bound / tears", f"{run.get('bound')} / {'yes' if run.get('torn') else 'no'}"),
              ("shards merged", str(run.get("merged_from", 1))),
              ("kernel", e(str(d.get("kernel"))))]
    rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in totals)
    notes = "".join(f"<li>{e(n)}</li>" for n in d.get("notes", []))
    clusters = []
    for n, c in enumerate(d.get("clusters", []), 1):
        rep = c["representative"]
        show = (f'<button class="show-cause" data-points="{" ".join(map(str, c["points"]))}">show on the timeline'
                f'</button>' if d.get("timeline") else "")
        clusters.append(
            f'<div class="cluster" id="cause-{n}"><h3>Cause {n}: <span class="count">{approx(c["count"])} '
            f'classes</span> <span class="muted">({approx(c["states"])} crash states, {len(c["points"])} crash '
            f'points)</span>{show}</h3><p>{e(c["explanation"])}</p>'
            f'<p class="muted">durable: {e(", ".join(c["durable"]) or "—")}; lost: {e(", ".join(c["lost"]) or "—")}</p>'
            f'<details><summary>smallest representative: state <code>{e(rep["state"])}</code> at crash point '
            f'{rep["point"]}</summary><p>{e(rep["reason"])}</p><ul>'
            + "".join(f"<li>{e(x)}</li>" for x in rep["explanation"])
            + f'</ul><p class="muted">reproduce: <code>blkjournal replay LOG --state {e(rep["state"])} --out '
              f'state.img</code>; crash points: {e(_ranges(c["points"]))}</p></details></div>')
    states = "".join(
        f'<details><summary><code>{e(f["state"])}</code> at crash point {f["point"]}: {e(f["reason"])}</summary>'
        f'<ul>{"".join(f"<li>{e(x)}</li>" for x in f["explanation"])}</ul></details>'
        for f in d.get("failures", []))
    tl = d.get("timeline")
    if tl:
        svg, used = _svg(tl)
        filters = "".join(f'<label><input type="checkbox" value="{_slug(k)}" checked>'
                          f'<span class="sw" style="background:{c}"></span>{e(k)}</label>' for k, c in used)
        filters += ('<label><input type="checkbox" value="r-cut" checked>'
                    '<span class="sw" style="background:#d62728"></span>crash points</label>')
        timeline_html = (f'<div class="filters">Show: {filters}</div><p>Zoom <input type="range" id="zoom" min="0.25" '
                         f'max="8" step="0.25" value="1"> <span id="zoomval"></span></p>'
                         f'<div id="timeline-box">{svg}</div><p class="muted">Writes in submission order, coloured '
                         f'by role; bottom lane: crash points checked (green legal, red illegal). Hover for details.</p>')
        script = f"<script>{JS}</script>"
    else:
        timeline_html, script = "<p>No timeline in this report.</p>", ""
    shards = "".join(f"<tr><td>{s['shard']}</td><td>{e(s['path'])}</td><td>{approx(s['crash_points'])}</td>"
                     f"<td>{approx(s['states_checked'])}</td><td>{approx(s['illegal'])}</td></tr>"
                     for s in d.get("shards", []))
    shard_html = (f'<section id="shards"><h2>Shards</h2><table class="totals"><tr><td>shard</td><td>report</td>'
                  f'<td>crash points</td><td>classes</td><td>illegal</td></tr>{shards}</table></section>'
                  if shards else "")
    verdict = ('<span class="verdict ok">every crash state legal</span>' if ok else
               f'<span class="verdict bad">{approx(d["illegal"])} illegal classes in '
               f'{len(d.get("clusters", []))} causes</span>')
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>blkjournal crash exploration: {e(title)}</title><style>{CSS}</style></head><body>
<header><h1>blkjournal crash exploration: {e(title)}</h1></header>
<nav><a href="#summary">Summary</a><a href="#causes">Causes</a><a href="#timeline-section">Timeline</a>
<a href="#states">Illegal states</a>{'<a href="#shards">Shards</a>' if shards else ''}</nav>
<main><section id="summary"><h2>Summary</h2><p>{verdict}</p><table class="totals">{rows}</table>
{f'<ul class="muted">{notes}</ul>' if notes else ''}</section>
<section id="causes"><h2>Causes, largest first</h2>{''.join(clusters) or '<p>None: no illegal state.</p>'}</section>
<section id="timeline-section"><h2>Timeline of the log</h2>{timeline_html}</section>
<section id="states"><h2>Illegal states ({len(d.get('failures', []))} listed of {approx(d['illegal'])})</h2>
{states or '<p>None.</p>'}</section>{shard_html}</main>{script}</body></html>"""


def write_html(r, path: str) -> None:
    with open(path, "w") as f:
        f.write(render_html(_doc(r)))


DEMO_DIR = "build/demo"


def keep_demo_report(res, directory: str = DEMO_DIR) -> None:
    """`make demo`: the `none` run's HTML report and a screenshot of it in headless Chromium."""
    import os

    from ..errors import BlkError
    from .browser import screenshot

    os.makedirs(directory, exist_ok=True)
    page = os.path.join(directory, "none-report.html")
    write_html(res, page)
    try:
        png = screenshot(page, os.path.join(directory, "none-report.png"))
        print(f"\nHTML report: {page}; as headless Chromium renders it: {png}")
    except BlkError as e:
        print(f"\nHTML report: {page} (no screenshot: {e})")
