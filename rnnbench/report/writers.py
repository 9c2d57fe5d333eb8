"""A report document written as Markdown, as one self-contained HTML file, and as the
CSV behind every table; and the folder they go to, kept free of an earlier report's
leftovers without ever touching anything else.

Everything is sorted and every number is formatted with fixed rules, so the same MLflow
data gives byte-identical files.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import re
import sys
from pathlib import Path

from rnnbench.report.document import Bullets, Code, Document, Figure, Heading, Para, Table, raw


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(doc: Document) -> str:
    out: list[str] = []
    for b in doc.blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {i}" for i in b.items))
        elif isinstance(b, Code):
            out.append("```\n" + b.text + "\n```")
        elif isinstance(b, Figure):
            out.append(f"![{b.caption}](figures/{b.name}.png)")
        elif isinstance(b, Table):
            if b.columns:
                lines = ["| " + " | ".join(_md_cell(c) for c in b.columns) + " |",
                         "|" + "|".join(" --- " for _ in b.columns) + "|"]
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
                if b.rows:
                    out.append("\n".join(lines))
            out.append(f"Data: [tables/{b.name}.csv](tables/{b.name}.csv)")
    return "\n\n".join(out) + "\n"


_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*")


def _inline_html(text: str) -> str:
    parts, pos = [], 0
    for m in _INLINE.finditer(text):
        parts.append(html.escape(text[pos:m.start()]))
        if m.group(1) is not None:
            parts.append(f"<code>{html.escape(m.group(1))}</code>")
        else:
            parts.append(f"<strong>{html.escape(m.group(2))}</strong>")
        pos = m.end()
    parts.append(html.escape(text[pos:]))
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


def csv_text(table: Table) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.csv_columns)
    writer.writerows([[raw(x) for x in row] for row in table.csv_rows])
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


def write(doc: Document, out_dir: Path) -> list[Path]:
    """Write ``report.md``, ``report.html``, ``tables/*.csv`` and ``figures/*.png`` under
    ``out_dir``. Files that an earlier report wrote there and this one does not are removed
    (only those: the folder's list of report files says which). An entry of that list
    that is not a report file inside the real ``out_dir`` (an absolute path, ``..``, a
    path through a symbolic link) is left alone with a warning."""
    from rnnbench.errors import ConfigError

    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {
        "report.md": markdown(doc).encode("utf-8"),
        "report.html": html_page(doc).encode("utf-8"),
    }
    for t in doc.tables:
        files[f"tables/{t.name}.csv"] = csv_text(t).encode("utf-8")
    for f in doc.figures:
        files[f"figures/{f.name}.png"] = f.png
    manifest = out_dir / MANIFEST
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
                path.unlink()
    written = []
    for name in sorted(files):
        path = _inside(out_dir, name, writing=True)
        if path is None:
            raise ConfigError(
                f"--out {out_dir}: {out_dir / name} would be written outside the folder "
                f"(through a symbolic link). Remove the link or give another --out.")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            path.unlink()
        path.write_bytes(files[name])
        written.append(path)
    manifest.write_text("\n".join(sorted(files)) + "\n")
    return written
