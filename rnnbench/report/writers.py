"""A report document written as Markdown, as one self-contained HTML file, and as the
CSV behind every table; and the folder they go to, kept free of an earlier report's
leftovers without ever touching anything else.

Everything is sorted and every number is formatted with fixed rules, so the same MLflow
data gives byte-identical files.
"""

from __future__ import annotations

import base64
import csv
import errno
import html
import io
import os
import re
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rnnbench.errors import ConfigError, RnnbenchError

from rnnbench.report.document import (Bullets, Code, Document, Figure, Heading, Para, Table,
                                      code, inline, longest_run, raw)


_MD_SPECIAL = re.compile(r"[\\`\[\]<>]|&(?=#?\w+;)")
_MD_ESCAPE = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}


def _md_text(text: str) -> str:
    """Text shown as it is in Markdown: no HTML, no link, no code span can start in it."""
    text = " ".join(text.splitlines())
    return _MD_SPECIAL.sub(lambda m: _MD_ESCAPE.get(m[0], "\\" + m[0]), text)


def _md_inline(text: str) -> str:
    """A paragraph, heading, list item or cell: its `code` and **bold** as Markdown, every
    other character escaped; a code span fenced longer than any backtick run in it."""
    out = []
    for kind, part in inline(str(text)):
        if kind == "code":
            out.append(code(part))
        elif kind == "bold":
            out.append(f"**{_md_text(part)}**")
        else:
            out.append(_md_text(part))
    return "".join(out)


def _md_cell(text: str) -> str:
    return _md_inline(text).replace("|", "\\|")


def _md_code_block(text: str) -> str:
    """A fenced block no line of ``text`` can close: the fence is longer than any
    backtick run in it."""
    fence = "`" * max(3, longest_run(text) + 1)
    return f"{fence}\n{text}\n{fence}"


def markdown(doc: Document) -> str:
    out: list[str] = []
    for b in doc.blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + _md_inline(b.text))
        elif isinstance(b, Para):
            out.append(_md_inline(b.text))
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {_md_inline(i)}" for i in b.items))
        elif isinstance(b, Code):
            out.append(_md_code_block(b.text))
        elif isinstance(b, Figure):
            out.append(f"![{_md_text(b.caption)}](figures/{b.name}.png)")
        elif isinstance(b, Table):
            if b.columns:
                lines = ["| " + " | ".join(_md_cell(c) for c in b.columns) + " |",
                         "|" + "|".join(" --- " for _ in b.columns) + "|"]
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
                if b.rows:
                    out.append("\n".join(lines))
            out.append(f"Data: [tables/{b.name}.csv](tables/{b.name}.csv)")
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    parts = []
    for kind, part in inline(str(text)):
        if kind == "code":
            parts.append(f"<code>{html.escape(part)}</code>")
        elif kind == "bold":
            parts.append(f"<strong>{html.escape(part)}</strong>")
        else:
            parts.append(html.escape(part))
    return "".join(parts)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1b1f24;line-height:1.45}
h1{border-bottom:2px solid #ddd;padding-bottom:.3em}h2{margin-top:2em;border-bottom:1px solid #eee}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #d0d7de;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f6f8fa}tr:nth-child(even) td{background:#fbfbfc}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.88em}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto}
img{max-width:100%;border:1px solid #eee}figure{margin:1em 0}
figcaption{font-size:.85em;color:#555}.csv{font-size:.8em;color:#555}
""".strip()


def html_page(doc: Document) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{html.escape(doc.title)}</title>", f"<style>{CSS}</style>", "</head>",
           "<body>"]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Code):
            out.append(f"<pre><code>{html.escape(b.text)}</code></pre>")
        elif isinstance(b, Figure):
            data = base64.b64encode(b.png).decode("ascii")
            out.append(f'<figure><img alt="{html.escape(b.caption)}" '
                       f'src="data:image/png;base64,{data}">'
                       f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")
        elif isinstance(b, Table):
            if b.columns and b.rows:
                head = "".join(f"<th>{html.escape(c)}</th>" for c in b.columns)
                body = "".join("<tr>" + "".join(f"<td>{_inline_html(str(c))}</td>" for c in row)
                               + "</tr>" for row in b.rows)
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            # the data travels inside the page: a report.html shared alone keeps it
            data = base64.b64encode(csv_text(b).encode("utf-8")).decode("ascii")
            out.append(f'<p class="csv">Data: <a download="{b.name}.csv" '
                       f'href="data:text/csv;charset=utf-8;base64,{data}">'
                       f"tables/{b.name}.csv</a></p>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def csv_cell(x: object) -> object:
    """A CSV value a spreadsheet cannot run: a text that starts with ``=``, ``+``, ``-``,
    ``@``, a tab or a carriage return gets a leading ``'`` (OWASP's advice against formula
    injection), unless it is a plain number. Numbers stay numbers (floats in full
    precision, NaN as empty)."""
    if isinstance(x, str):
        if x[:1] in ("=", "+", "-", "@", "\t", "\r") and not _NUMBER.fullmatch(x):
            return "'" + x
        return x
    return raw(x)


def csv_text(table: Table) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([csv_cell(c) for c in table.csv_columns])
    writer.writerows([[csv_cell(x) for x in row] for row in table.csv_rows])
    return buf.getvalue()


MANIFEST = ".rnnbench-report"


REPORT_FILE = re.compile(r"^(report\.md|report\.html|tables/[^/]+\.csv|figures/[^/]+\.png)$")


def _warn(message: str) -> None:
    print(f"rnnbench-report: warning: {message}", file=sys.stderr, flush=True)


def _inside(out_dir: Path, name: str, writing: bool = False) -> Path | None:
    """``out_dir / name`` when it is a report file really inside ``out_dir`` (no absolute
    path, no ``..``, no symbolic link on the way, not outside the real folder)."""
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or not REPORT_FILE.match(rel.as_posix()):
        return None
    # when writing, a link in place of the file itself is replaced, not followed
    for i in range(1, len(rel.parts) + (0 if writing else 1)):
        if (out_dir / Path(*rel.parts[:i])).is_symlink():
            return None
    path = out_dir / rel
    where = path.parent if writing else path
    if not where.resolve().is_relative_to(out_dir.resolve()):
        return None
    return path


class OutputError(RnnbenchError):
    """The report cannot be written to its folder (``--out``)."""


_FIX = {
    errno.ENOSPC: "the disk is full: free some space or give --out on another disk",
    errno.EDQUOT: "the disk quota is used up: free some space or give --out elsewhere",
    errno.EROFS: "the file system is read-only: give an --out folder you can write to",
    errno.EACCES: "permission denied: give an --out folder you can write to",
    errno.EPERM: "permission denied: give an --out folder you can write to",
    errno.ENAMETOOLONG: "a name in the path is too long: give a shorter --out",
    errno.ELOOP: "the path goes round a loop of symbolic links: remove the link or give "
                 "another --out",
    errno.EEXIST: "a file of that name is in the way: --out must be a folder; remove the "
                  "file or give another --out",
    errno.ENOTDIR: "a part of the path is a file, not a folder: give another --out",
}


def output_error(out_dir: Path, exc: OSError, started: bool = True) -> OutputError:
    """One sentence for an OS fault of the report's folder: where, what, and the fix."""
    fix = _FIX.get(exc.errno or 0, "check the folder and give another --out if needed")
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(out_dir) else ""
    left = ("the folder holds what it held before, no part of this report"
            if started else "nothing was read or written")
    return OutputError(f"--out {out_dir}: the report cannot be written there{where}: "
                       f"{exc.strerror or exc}; {fix}. ({left.capitalize()}.)")


def _refused(out_dir: Path, code: int, what: str) -> OutputError:
    return output_error(out_dir, OSError(code, what), started=False)


def check_out(out_dir: Path) -> None:
    """Refuse, before anything is read or written, an ``--out`` that cannot become the
    report's folder: a file, a loop of symbolic links, a name too long, a folder under a
    file or under one that cannot be written."""
    try:
        real = out_dir.resolve()
    except (RuntimeError, OSError):  # Python says "Symlink loop" with a RuntimeError
        raise _refused(out_dir, errno.ELOOP, os.strerror(errno.ELOOP)) from None
    if any(len(os.fsencode(part)) > 255 for part in real.parts):
        raise _refused(out_dir, errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
    if real.exists() and not real.is_dir():
        raise _refused(out_dir, errno.EEXIST, f"{real} is a file")
    existing = real
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise _refused(out_dir, errno.ENOTDIR, f"{existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        read_only = os.statvfs(existing).f_flag & os.ST_RDONLY
        raise _refused(out_dir, errno.EROFS if read_only else errno.EACCES,
                       f"cannot write in {existing}")


class InterruptedAfterWriting(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) came while the finished report took its place: it is whole."""


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while the new files take the old ones' places: the folder
    then holds either the earlier report or the new one, never a mix. A signal that came
    meanwhile is raised when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in old:
        signal.signal(sig, lambda signum, frame: came.append(signum))
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if came:
            raise InterruptedAfterWriting(f"{signal.Signals(came[0]).name} received")


def write(doc: Document, out_dir: Path) -> list[Path]:
    """Write ``report.md``, ``report.html``, ``tables/*.csv`` and ``figures/*.png`` under
    ``out_dir``. Files that an earlier report wrote there and this one does not are removed
    (only those: the folder's list of report files says which). An entry of that list
    that is not a report file inside the real ``out_dir`` (an absolute path, ``..``, a
    path through a symbolic link) is left alone with a warning.

    Every file is first written in full under a hidden temporary name; only when all are
    written do they take their real names (with Ctrl-C held). A full disk, a folder that
    cannot be written or Ctrl-C before then leaves the folder as it was (an earlier report
    whole, or no report), and raises :class:`OutputError` (or KeyboardInterrupt)."""
    check_out(out_dir)
    files: dict[str, bytes] = {
        "report.md": markdown(doc).encode("utf-8"),
        "report.html": html_page(doc).encode("utf-8"),
    }
    for t in doc.tables:
        files[f"tables/{t.name}.csv"] = csv_text(t).encode("utf-8")
    for f in doc.figures:
        files[f"figures/{f.name}.png"] = f.png
    created: list[Path] = []
    staged: list[tuple[Path, Path]] = []
    done = False
    try:
        _make_dirs(out_dir, created)
        stale = _stale_files(out_dir, files)
        for name in sorted(files):
            path = _inside(out_dir, name, writing=True)
            if path is None:
                raise ConfigError(
                    f"--out {out_dir}: {out_dir / name} would be written outside the folder "
                    f"(through a symbolic link). Remove the link or give another --out.")
            _make_dirs(path.parent, created)
            _stage(path, files[name], staged)
        manifest = out_dir / MANIFEST
        _stage(manifest, ("\n".join(sorted(files)) + "\n").encode(), staged)
        with _interrupts_held():
            while staged:
                tmp, path = staged[0]
                if path.is_symlink():
                    path.unlink()
                os.replace(tmp, path)
                staged.pop(0)
            for path in stale:
                path.unlink(missing_ok=True)
        done = True
    except OSError as exc:
        raise output_error(out_dir, exc) from None
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        if not done:
            for folder in reversed(created):  # the folders this call made, if left empty
                try:
                    folder.rmdir()
                except OSError:
                    pass
    return [out_dir / name for name in sorted(files)]


def _make_dirs(folder: Path, created: list[Path]) -> None:
    """``folder`` and the parents it lacks, each one made remembered in ``created``."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir()
        created.append(path)


def _stage(path: Path, data: bytes, staged: list[tuple[Path, Path]]) -> None:
    """``data`` written in full to a hidden file beside ``path``, listed in ``staged``
    (before it is opened, so that whatever stops the writing, the caller removes it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    staged.append((tmp, path))
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())  # a full disk may only say so here


def _stale_files(out_dir: Path, files: dict[str, bytes]) -> list[Path]:
    """The files an earlier report listed in the folder's manifest that this one does not
    write (each checked to be a report file inside the real folder)."""
    manifest = out_dir / MANIFEST
    stale = []
    if manifest.is_symlink():
        _warn(f"{manifest} is a symbolic link: it was replaced, its target left alone.")
        manifest.unlink()
    elif manifest.is_file():
        for old in manifest.read_text(errors="replace").splitlines():
            if not old.strip() or old in files:
                continue
            path = _inside(out_dir, old)
            if path is None:
                _warn(f"{manifest} lists {old!r}, which is not a report file inside "
                      f"{out_dir.resolve()}: left alone.")
            elif path.is_file():
                stale.append(path)
    return stale
