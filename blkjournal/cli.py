"""The command line: a thin shell over the library.  Every error is one line and an exit code.

Exit codes: 0 ok / clean, 1 problems found (fsck findings, illegal crash states, a lying disk),
2 bad input or a refused operation (nothing written).
"""

from __future__ import annotations

import functools
import json
import mmap
import os
import stat
import sys
from typing import Optional

import typer

from .device import Device
from .errors import BlkError, error_line
from .format import BARRIERS, INLINE_MAX, MAX_INLINE, PROTOCOLS, is_own_store

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="A crash-consistent file store on a raw block device, and the harness that proves it.")


def parse_size(text: str) -> int:
    """'64M', '1G', '4096', '4k' -> bytes."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        if t and t[-1] in mult:
            return int(float(t[:-1]) * mult[t[-1]])
        return int(t)
    except ValueError:
        raise BlkError(f"bad size {text!r} (e.g. 4096, 64M, 1G)") from None


def _open_store(dev_path: str, *, readonly: bool = False):
    from .store import Store

    dev = Device(dev_path, readonly=readonly)
    try:
        return Store.open(dev, recover=not readonly)
    except BaseException:
        dev.close()
        raise


def _read_input(src: Optional[str]):
    """The input's bytes; a regular file is read into page-aligned memory (an anonymous mmap),
    which the store writes with O_DIRECT as it is, without a copy (Device.writev)."""
    if src is None or src == "-":
        return sys.stdin.buffer.read()
    try:
        with open(src, "rb") as f:
            info = os.fstat(f.fileno())
            size = info.st_size
            if size and stat.S_ISREG(info.st_mode):
                buf = mmap.mmap(-1, size)
                if f.readinto(buf) == size and not f.read(1):
                    return buf
                f.seek(0)  # it changed while being read: take what it holds now
            return f.read()
    except OSError as e:
        raise BlkError(f"{src}: {e.strerror}") from None


@app.command()
def mkfs(dev: str = typer.Argument(..., help="block device or image file"),
         size: Optional[str] = typer.Option(None, help="create a new image file of this size (e.g. 64M)"),
         protocol: str = typer.Option("journal", help="|".join(PROTOCOLS)),
         barrier: str = typer.Option("flush", help="|".join(BARRIERS)),
         inline_max: Optional[int] = typer.Option(
             None, help=f"journal: log the data of writes of at most this many blocks in their transaction "
                        f"(one device request per synced small write; default {INLINE_MAX}, 0: never, "
                        f"at most {MAX_INLINE})"),
         force: bool = typer.Option(False, "--force", help="overwrite a file-system or partition signature")):
    """Format DEV as a blkjournal store."""
    from .safety import check_safe
    from .store import Store

    if protocol not in PROTOCOLS:
        raise BlkError(f"unknown protocol {protocol!r} (choose {', '.join(PROTOCOLS)})")
    if barrier not in BARRIERS:
        raise BlkError(f"unknown barrier kind {barrier!r} (choose {', '.join(BARRIERS)})")
    if inline_max is not None and not (0 <= inline_max <= MAX_INLINE and (protocol == "journal" or not inline_max)):
        raise BlkError(f"--inline-max {inline_max}: 0..{MAX_INLINE}, and only the journal protocol logs data inline")
    create = parse_size(size) if size else None
    if not os.path.exists(dev) and create is None:
        raise BlkError(f"{dev} does not exist (give --size to create an image file)")
    if os.path.exists(dev):
        check_safe(dev, force=force, is_own_store=lambda p: False)
        if is_own_store(dev) and not force:
            raise BlkError(f"refusing {dev}: it already holds a blkjournal store (use --force to reformat)")
    with Device(dev, create_size=create) as d:
        s = Store.mkfs(d, protocol, barrier, inline_max=inline_max)
        typer.echo(f"{dev}: {s.sb.nblocks} blocks, protocol {protocol}, barrier {barrier}, "
                   f"journal {s.sb.journal_blocks} blocks"
                   f"{f' (data of writes up to {s.sb.inline_max} blocks inline)' if s.sb.inline_max else ''}, "
                   f"up to {s.sb.max_files} files")


@app.command()
def info(dev: str, json_out: bool = typer.Option(False, "--json")):
    """Show the superblock, geometry and usage."""
    from dataclasses import asdict

    from .properties import probe

    s = _open_store(dev, readonly=True)
    with s.dev:
        sb = asdict(s.sb)
        sb["uuid"] = s.sb.uuid.hex()
        out = {"superblock": sb, "files": len(s.files), "free_blocks": s.freelist.nfree,
               "device": asdict(probe(dev))}
    if json_out:
        typer.echo(json.dumps(out, indent=2, default=str))
    else:
        for k, v in out["superblock"].items():
            typer.echo(f"{k:16} {v}")
        typer.echo(f"{'files':16} {out['files']}")
        typer.echo(f"{'free blocks':16} {out['free_blocks']}")


@app.command()
def put(dev: str, name: str, from_: Optional[str] = typer.Option(None, "--from", help="FILE or - (stdin)")):
    """Store a whole file under NAME (replacing it), durably."""
    data = _read_input(from_)
    s = _open_store(dev)
    with s.dev:
        s.put(name, data)
        s.sync()
        s.close()  # a clean shutdown: no used-list leftovers for fsck to call a leak


@app.command()
def get(dev: str, name: str, to: Optional[str] = typer.Option(None, "--to", help="FILE or - (stdout)")):
    """Read file NAME (streamed: any size, little memory)."""
    s = _open_store(dev, readonly=True)
    with s.dev:
        f = s.lookup(name)
        chunks = s.stream_file(f)
        first = next(chunks, b"")  # a file that fails at once leaves no output file behind
        if to is None or to == "-":
            out = sys.stdout.buffer
            out.write(first)
            for c in chunks:
                out.write(c)
            out.flush()
        else:
            try:
                with open(to, "wb") as out:
                    out.write(first)
                    for c in chunks:
                        out.write(c)
            except BaseException:  # a block failing its checksum half-way: no partial copy left
                if os.path.isfile(to):  # (never a device such as /dev/null)
                    os.unlink(to)
                raise


@app.command("ls")
def ls_(dev: str, json_out: bool = typer.Option(False, "--json")):
    """List files."""
    s = _open_store(dev, readonly=True)
    with s.dev:
        rows = s.listing()
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            typer.echo(f"{r['size']:>12}  {r['name']}")


@app.command()
def rm(dev: str, name: str):
    """Delete file NAME, durably."""
    s = _open_store(dev)
    with s.dev:
        s.remove(name)
        s.sync()
        s.close()  # a clean shutdown: no used-list leftovers for fsck to call a leak


@app.command()
def truncate(dev: str, name: str, size: str):
    """Set the size of NAME (shrinking frees blocks; growing reads zeros), durably."""
    s = _open_store(dev)
    with s.dev:
        s.truncate(name, parse_size(size))
        s.sync()
        s.close()  # a clean shutdown: no used-list leftovers for fsck to call a leak


@app.command()
def write(dev: str, name: str, offset: str = typer.Option(..., help="byte offset"),
          from_: Optional[str] = typer.Option(None, "--from", help="FILE or - (stdin)")):
    """pwrite into an existing file at OFFSET, durably."""
    data = _read_input(from_)
    s = _open_store(dev)
    with s.dev:
        s.write(name, parse_size(offset), data)
        s.sync()
        s.close()  # a clean shutdown: no used-list leftovers for fsck to call a leak


@app.command()
def sync(dev: str):
    """Open (running recovery) and flush."""
    s = _open_store(dev)
    with s.dev:
        s.sync()


@app.command()
def recover(dev: str):
    """Run the protocol's crash recovery and make it durable."""
    from .store import Store

    with Device(dev) as d:
        s = Store.open(d, recover=True)
        for line in getattr(s.protocol, "repairs", []):
            typer.echo(line)
        if getattr(s.protocol, "replayed", 0):
            typer.echo(f"replayed {s.protocol.replayed} committed journal transactions")
        s.sync()
        typer.echo(f"{dev}: recovered, {len(s.files)} files")


@app.command("fsck")
def fsck_(dev: str, repair: bool = typer.Option(False, "--repair", help="fix what is safe to fix"),
          json_out: bool = typer.Option(False, "--json")):
    """Check every invariant; exit 1 when anything is wrong.

    --repair runs recovery and rebuilds the freelist; whatever it leaves is listed with the
    reason it could not be repaired."""
    from .fsck import fsck, not_repaired, repair as do_repair

    with Device(dev, readonly=not repair) as d:
        report = fsck(d)
        done, refused, left = [], None, []
        if repair and not report.clean:
            done, refused = do_repair(d)
            after = fsck(d)
            left = not_repaired(after)
        else:
            after = report
    if json_out:
        out = report.to_json()
        if repair:
            out["repairs"] = done
            out["not_repaired"] = ([refused] if refused else []) + left
            out["after_repair"] = after.to_json()
        typer.echo(json.dumps(out, indent=2))
    else:
        for f in report.findings:
            typer.echo(f"{f.code}: {f.message}" + (f" [blocks {', '.join(map(str, f.blocks))}]" if f.blocks else ""))
        typer.echo(f"{dev}: {report.files} files; {report.verdict()}")
        for line in done:
            typer.echo(f"repaired: {line}")
        if refused:
            typer.echo(f"not repaired: {refused}")
        for line in left:
            typer.echo(f"not repaired: {line}")
        if repair and not report.clean:
            typer.echo(f"after repair: {after.verdict()}")
    if not report.clean:
        raise typer.Exit(1)


def _explore_options(res, json_f, junit_f, html_f) -> None:
    from .crash.report import print_summary, report_doc, write_html, write_json, write_junit

    doc = report_doc(res)
    print_summary(doc)
    if doc.get("faults") is not None:
        from .crash.faults import print_summary as print_faults

        print_faults(doc["faults"])
    if json_f:
        write_json(doc, json_f)
    if junit_f:
        write_junit(doc, junit_f)
    if html_f:
        write_html(doc, html_f)


_FAULTS = typer.Option(None, "--faults", help="also inject storage faults, one at a time on sampled crash "
                       "states: misdirect,lost-write,bitrot,read-error,garbage (docs/faults.md)")
_FAULT_SAMPLES = typer.Option(100, help="faults injected per kind (a seeded sample)")
_FAULT_AT = typer.Option(None, help="POINT[:BLOCK[:DEST]]: inject at this crash point (and block; a misdirected "
                         "write lands at DEST)")


def _fault_options(faults: Optional[str], samples: int, at: Optional[str]) -> dict:
    from .crash.faults import parse_fault_at, parse_kinds

    if faults is None:
        if at is not None:
            raise BlkError("--fault-at needs --faults")
        return {}
    if samples < 1:
        raise BlkError("--fault-samples must be at least 1")
    return dict(faults=parse_kinds(faults), fault_samples=samples, fault_at=parse_fault_at(at))


def _parse_shard(shard: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in shard.split("/"))
    except ValueError:
        raise BlkError(f"bad --shard {shard!r} (want i/N, e.g. 0/2)") from None
    return i, n


@app.command()
def crashtest(dev: Optional[str] = typer.Argument(None, help="image file to record on (default: a temp image)"),
              image_size: str = typer.Option("", help="size of the image the workload runs on "
                                             "(default: the workload's own, 4M for random)"),
              protocol: str = typer.Option("journal", help="|".join(PROTOCOLS)),
              barrier: str = typer.Option("flush", help="|".join(BARRIERS)),
              ops: int = typer.Option(200, help="operations in the random workload"),
              seed: int = typer.Option(0, help="workload and sampling seed"),
              workload: str = typer.Option("random", help="random | append (seed B's example) | grow | unsynced | "
                                         "pressure | wrap | big | relap | stream (docs: docs/explorer.md)"),
              jobs: int = typer.Option(os.cpu_count() or 1, help="worker processes"),
              bound: Optional[int] = typer.Option(None, help="checks per crash-point segment before giving up "
                                                  "exhaustiveness (default 4096; 65536 with --torn)"),
              torn: bool = typer.Option(False, "--torn", help="also tear multi-sector writes"),
              shard: str = typer.Option("0/1", help="i/N: explore the i-th of N shards"),
              sector_size: int = typer.Option(512, help="logical sector size of the recorded device"),
              ablate: bool = typer.Option(False, "--ablate", help="remove each barrier site in turn"),
              json_f: Optional[str] = typer.Option(None, "--json", help="write the report as JSON"),
              junit_f: Optional[str] = typer.Option(None, "--junit", help="write JUnit XML"),
              html_f: Optional[str] = typer.Option(None, "--html", help="write an HTML timeline"),
              keep_failing: Optional[str] = typer.Option(None, help="write each failing state as an image here"),
              faults: Optional[str] = _FAULTS, fault_samples: int = _FAULT_SAMPLES,
              fault_at: Optional[str] = _FAULT_AT,
              save_log: Optional[str] = typer.Option(None, help="keep the recorded dm-log-writes log here")):
    """Record a workload, enumerate every crash state, recover and check each.  Exit 1 if any is illegal."""
    import tempfile

    from .crash.explore import ablation, crashtest as run_crashtest
    from .crash.report import print_ablation

    if protocol not in PROTOCOLS or barrier not in BARRIERS:
        raise BlkError(f"unknown protocol/barrier {protocol}/{barrier}")
    if jobs < 1 or ops < 1 or (bound is not None and bound < 1):
        raise BlkError("--jobs, --ops and --bound must be at least 1")
    size = parse_size(image_size) if image_size else None
    fkw = _fault_options(faults, fault_samples, fault_at)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BLKJOURNAL_TMP", "/var/tmp")) as work:
        kw = dict(protocol=protocol, barrier=barrier, nops=ops, seed=seed, workload=workload, image_size=size,
                  sector_size=sector_size, jobs=jobs, bound=bound, torn=torn, progress=True)
        if ablate:
            rows = ablation(work, **kw)
            print_ablation(rows)
            if json_f:
                with open(json_f, "w") as f:
                    json.dump(rows, f, indent=2)
            return
        if dev is not None:
            work = os.path.dirname(os.path.abspath(dev)) or "."
        res, _ = run_crashtest(work, shard=_parse_shard(shard), keep_failing=keep_failing, save_log=save_log,
                               image=dev, **kw, **fkw)
        _explore_options(res, json_f, junit_f, html_f)
        if workload == "append":
            from .crash.seedb import append_states

            typer.echo("\nSeed B's crash cases among the states right after the append (earlier writes durable):")
            for row in sorted(append_states(work, protocol, barrier), key=lambda r: (r["case"] is None, r["case"] or 0)):
                name = f"case {row['case']}" if row["case"] else "-"
                typer.echo(f"  {name:7} written {'+'.join(row['written']) or 'nothing':28} "
                           f"seed: {row['seed_verdict'] or 'not a crash case':34} fsck: {row['fsck']}; "
                           f"after recovery: {row['after_recovery']}")
    if not res.ok:
        raise typer.Exit(1)


@app.command("check-log")
def check_log(log: str, protocol: Optional[str] = typer.Option(None, help="|".join(PROTOCOLS) +
                                                             " (default: from LOG.workload.json)"),
              jobs: int = typer.Option(os.cpu_count() or 1),
              bound: Optional[int] = typer.Option(None, help="default 4096; 65536 with --torn"),
              torn: bool = typer.Option(False, "--torn"), shard: str = typer.Option("0/1"),
              json_f: Optional[str] = typer.Option(None, "--json"), junit_f: Optional[str] = typer.Option(None, "--junit"),
              html_f: Optional[str] = typer.Option(None, "--html"), keep_failing: Optional[str] = typer.Option(None),
              faults: Optional[str] = _FAULTS, fault_samples: int = _FAULT_SAMPLES,
              fault_at: Optional[str] = _FAULT_AT,
              seed: int = typer.Option(0, help="fault sampling seed")):
    """Explore a log recorded elsewhere (e.g. by the kernel's dm-log-writes in the VM)."""
    from .crash.explore import explore_log

    if protocol is not None and protocol not in PROTOCOLS:
        raise BlkError(f"unknown protocol {protocol!r}")
    res = explore_log(log, protocol=protocol, jobs=jobs, bound=bound, torn=torn, shard=_parse_shard(shard),
                      keep_failing=keep_failing, progress=True, seed=seed,
                      **_fault_options(faults, fault_samples, fault_at))
    _explore_options(res, json_f, junit_f, html_f)
    if not res.ok:
        raise typer.Exit(1)


report_app = typer.Typer(help="Crash-exploration reports.", no_args_is_help=True, add_completion=False)


@report_app.callback()
def _report_group() -> None:
    """Crash-exploration reports."""


@report_app.command("merge")
def report_merge(shards: list[str] = typer.Argument(..., help="the shard reports (crashtest --shard i/N --json)"),
                 json_f: Optional[str] = typer.Option(None, "--json", help="write the merged report as JSON"),
                 junit_f: Optional[str] = typer.Option(None, "--junit", help="write JUnit XML"),
                 html_f: Optional[str] = typer.Option(None, "--html", help="write the HTML report")):
    """Merge the shard reports of one exploration; exit 1 if any state is illegal, 2 if they do not fit."""
    from .crash.merge import load_report, merge_reports

    doc = merge_reports([load_report(p) for p in shards], shards)
    _explore_options(doc, json_f, junit_f, html_f)
    fx = doc.get("faults") or {}
    if doc["illegal"] or fx.get("silent_corruptions") or fx.get("crashed"):
        raise typer.Exit(1)


def _mount_subapps() -> None:
    from .crash.cli import log_app, replay_cmd
    from .devices_cli import devices
    from .hwcheck.cli import hwcheck_app
    from .vm.cli import vm_app

    app.command("devices")(devices)
    app.command("replay")(replay_cmd)
    app.add_typer(log_app, name="log")
    app.add_typer(report_app, name="report")
    app.add_typer(hwcheck_app, name="hwcheck")
    app.add_typer(vm_app, name="vm")


_mount_subapps()


@functools.lru_cache(maxsize=None)
def _command():
    """The click command typer builds from `app` (once per process: building it costs ~60 ms)."""
    return typer.main.get_command(app)


def _click_errors():
    """(ClickException, NoArgsIsHelpError) of the click typer uses (vendored in newer typer)."""
    try:
        from typer._click.exceptions import ClickException, NoArgsIsHelpError
    except ImportError:  # older typer depends on click itself
        from click.exceptions import ClickException

        NoArgsIsHelpError = ()  # noqa: N806 (older click shows the help itself)
    return ClickException, NoArgsIsHelpError


def main() -> None:
    """Run the CLI.  Every error -- a usage error, BlkError, an OS error -- is one line in one
    format (errors.error_line) and an exit code: 2 bad input or refused, 1 problems found."""
    click_error, no_args = _click_errors()
    try:
        rc = _command().main(args=sys.argv[1:], prog_name="blkjournal", standalone_mode=False)
    except no_args as e:
        typer.echo(e.ctx.get_help())
        rc = 0
    except BlkError as e:
        print(error_line(e), file=sys.stderr)
        rc = e.exit_code
    except click_error as e:
        print(error_line(f"{e.format_message()} (see --help)"), file=sys.stderr)
        rc = 2
    except KeyboardInterrupt:
        rc = 130
    except OSError as e:
        print(error_line(f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}"), file=sys.stderr)
        rc = 2
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
