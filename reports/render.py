"""Render a report: self-contained HTML (inline CSS, figures as data URIs), JSON, PDF.

The HTML needs no network to open: no scripts, fonts or images are fetched. Its Chinese is
drawn in an installed CJK font, WenQuanYi Micro Hei first (Debian's ``fonts-wqy-microhei``,
which ``.ci/run`` installs; without one Chromium draws empty boxes). The PDF is the HTML
printed by headless Chromium where it is installed (``chromium --headless --print-to-pdf``);
without it the report says so and writes none.
"""

from __future__ import annotations

import base64
import html
import shutil
import subprocess
import tempfile
from pathlib import Path

from reports.model import Cell, Section, SourceWarning, Table
from reports.plots import LEVEL_COLORS
from reports.report import Report

__all__ = ["chromium_path", "render_html", "render_json", "write_pdf"]

PDF_TIMEOUT_S = 120.0
_LEVEL_ZH = {"green": "绿色", "yellow": "黄色", "orange": "橙色", "red": "红色"}

# Chinese needs a font with CJK glyphs, else Chromium (and so the PDF) draws empty boxes:
# WenQuanYi Micro Hei (Debian's fonts-wqy-microhei, which .ci/run installs) first, then the
# CJK sans faces of other systems (Noto / Source Han Sans, Windows, macOS), then any sans.
_CSS = """
body { font-family: "WenQuanYi Micro Hei", "Noto Sans CJK SC", "Source Han Sans SC",
       "Microsoft YaHei", "PingFang SC", "Hiragino Sans GB", sans-serif;
       margin: 2em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 2px solid #555; margin-top: 2em; }
h3 { font-size: 1.05em; margin-bottom: .3em; }
.en { color: #555; font-weight: normal; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .85em; }
th, td { border: 1px solid #bbb; padding: 3px 6px; text-align: right; }
th { background: #eee; } td.t { text-align: left; }
.level { color: #fff; padding: 1px 6px; border-radius: 3px; font-weight: bold; }
.note { color: #444; font-style: italic; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _both(zh: str, en: str) -> str:
    return f'{_e(zh)} <span class="en">{_e(en)}</span>'


def _badge(level: str) -> str:
    return (
        f'<span class="level" style="background:{LEVEL_COLORS.get(level, "#777")}">'
        f"{_e(_LEVEL_ZH.get(level, level))} {_e(level)}</span>"
    )


def _cell(value: Cell, key: str) -> str:
    if value is None:
        return "<td>–</td>"
    if key == "level":
        return f'<td class="t">{_badge(str(value))}</td>'
    if isinstance(value, float):
        # counts arrive as floats from JSON-friendly figures: print them as counts
        text = f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}"
        return f"<td>{text}</td>"
    if isinstance(value, int):
        return f"<td>{value:,}</td>"
    return f'<td class="t">{_e(value)}</td>'


def _table(t: Table) -> str:
    head = "".join(
        f"<th>{_e(c.title_zh)}<br><span class='en'>{_e(c.title_en)}"
        f"{' (' + _e(c.unit) + ')' if c.unit else ''}</span></th>"
        for c in t.columns
    )
    body = "".join(
        "<tr>" + "".join(_cell(row.get(c.key), c.key) for c in t.columns) + "</tr>"
        for row in t.rows
    )
    note = ""
    if t.note_zh or t.note_en:
        note = f'<p class="note">{_e(t.note_zh or "")} {_e(t.note_en or "")}</p>'
    return f"<h3>{_both(t.title_zh, t.title_en)}</h3><table><tr>{head}</tr>{body}</table>{note}"


def _section(s: Section) -> str:
    parts = [f'<section id="{_e(s.key)}"><h2>{_both(s.title_zh, s.title_en)}</h2>']
    for zh, en in zip(s.notes_zh, s.notes_en, strict=False):
        parts.append(f'<p class="note">{_e(zh)} / {_e(en)}</p>')
    parts.extend(_table(t) for t in s.tables)
    for f in s.figures:
        data = base64.b64encode(f.png).decode()
        parts.append(
            f"<h3>{_both(f.title_zh, f.title_en)}</h3>"
            f'<img alt="{_e(f.title_en)}" src="data:image/png;base64,{data}">'
        )
    parts.append("</section>")
    return "".join(parts)


def _warnings(ws: list[SourceWarning]) -> str:
    raised = [w for w in ws if w.level != "green"]
    parts = [f'<section id="warnings"><h2>{_both("预警清单", "Warning list")}</h2>']
    if not raised:
        parts.append(f'<p class="note">{_both("本季度无预警。", "No warnings this quarter.")}</p>')
    else:
        parts.append(
            "<table><tr><th>等级<br><span class='en'>level</span></th>"
            "<th>类型<br><span class='en'>type</span></th>"
            "<th>数据源<br><span class='en'>source</span></th>"
            "<th>原因<br><span class='en'>reasons</span></th></tr>"
        )
        for w in raised:
            reasons = "<br>".join(
                f"{_e(zh)} / {_e(en)}" for zh, en in zip(w.reasons_zh, w.reasons_en, strict=False)
            )
            parts.append(
                f'<tr><td class="t">{_badge(w.level)}</td><td class="t">{_e(w.source_type)}</td>'
                f'<td class="t">{_e(w.source_id)}</td><td class="t">{reasons}</td></tr>'
            )
        parts.append("</table>")
    parts.append("</section>")
    return "".join(parts)


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page, headings in Chinese and English."""
    rev = f" · 第 {report.revision} 版 revision {report.revision}" if report.revision else ""
    counts = {
        lvl: sum(1 for w in report.warnings if w.level == lvl)
        for lvl in ("red", "orange", "yellow", "green")
    }
    summary = " ".join(f"{_badge(k)} {v}" for k, v in counts.items())
    notes = "".join(
        f'<p class="note">{_e(zh)} / {_e(en)}</p>'
        for zh, en in zip(report.notes_zh, report.notes_en, strict=False)
    )
    body = "".join(_section(s) for s in report.sections)
    return (
        "<!DOCTYPE html><html lang='zh-CN'><head><meta charset='utf-8'>"
        f"<title>ghgwatch {report.quarter} 季度碳排放形势分析与预警</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<h1>{_e(report.quarter)} 季度碳减排形势分析与预警"
        f'<br><span class="en">Quarterly carbon-reduction analysis and early warning,'
        f" {_e(report.quarter)}</span></h1>"
        f"<p>数据范围 Data range: {_e(report.data_from.isoformat())} – "
        f"{_e(report.data_to.isoformat())} ({_e(report.timezone)}){_e(rev)}<br>"
        f"生成时间 Generated: {_e(report.generated_at.isoformat(timespec='seconds'))}</p>"
        f"<p>{summary}</p>{notes}{_warnings(report.warnings)}{body}</body></html>"
    )


def render_json(report: Report) -> str:
    """The report for machines: every section's tables, warnings and figures' titles (the
    plots themselves are in the HTML)."""
    return report.model_dump_json(
        indent=2, exclude={"sections": {"__all__": {"figures": {"__all__": {"png"}}}}}
    )


def chromium_path() -> str | None:
    """The headless browser used for PDFs, when installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def write_pdf(html_path: Path, pdf_path: Path) -> bool:
    """Print ``html_path`` to ``pdf_path`` with headless Chromium; False when none is installed.

    Raises:
        RuntimeError: Chromium ran and failed (its stderr, shortened).
    """
    browser = chromium_path()
    if browser is None:
        return False
    # a profile of its own: two Chromiums on the default profile refuse to run side by side
    with tempfile.TemporaryDirectory(prefix="ghgwatch-chromium-") as profile:
        proc = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={profile}",
                "--no-pdf-header-footer",
                f"--print-to-pdf={pdf_path}",
                html_path.resolve().as_uri(),
            ],
            capture_output=True,
            timeout=PDF_TIMEOUT_S,
            check=False,
        )
    if proc.returncode != 0 or not pdf_path.is_file():
        raise RuntimeError(f"chromium could not print the PDF: {proc.stderr.decode()[-400:]}")
    return True
