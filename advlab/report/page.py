"""The building blocks of advlab's HTML reports: the page, tables, embedded figures, status badges, cards.

Every piece of text is escaped here (`escape`), so a run name or override cannot inject markup; figures are
embedded as base64 data URIs and the style is inline, so a page opens anywhere, offline.
"""

import base64
import html
import json
from pathlib import Path

from advlab.results import WORST_CASE, Check, Results
from advlab.stats import Rate

REPORT = "report.html"

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; max-width: 1400px;
       margin: 1.5em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #666; } code { background: #f3f3f3; padding: 0 0.25em; border-radius: 3px; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; font-size: 13px; text-align: left; vertical-align: top; }
th { background: #f6f6f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; margin: 1em 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1em; min-width: 9em; }
.card .big { font-size: 1.5em; font-weight: 600; } .card .ci { color: #666; font-size: 0.9em; }
.status { font-weight: 600; padding: 0.05em 0.5em; border-radius: 3px; }
.PASS { background: #dff3e0; color: #1b5e20; } .WARN { background: #fff0cc; color: #8a5300; }
.SKIP { background: #eee; color: #555; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; margin-top: 0.3em; } .missing { color: #b00020; }
.scroll { overflow-x: auto; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 12px; }
"""

# Records, for humans and for the headless-browser test, that every image decoded.
SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.images = loaded + "/" + images.length;
  document.body.dataset.tables = String(document.querySelectorAll("table").length);
});
"""


def escape(value) -> str:
    return html.escape(str(value))


def page(title: str, body: list[str]) -> str:
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{escape(title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
        *body, f"<script>{SCRIPT}</script>", "</body>", "</html>", ""])


def table(header: list[str], rows: list[list[str]], numeric_from: int = 1, groups: list[tuple[str, int]] = ()) -> str:
    """Cells are HTML already (escape before); columns from `numeric_from` on are right-aligned.
    groups: an optional header row above, (html, columns spanned) per cell."""
    head = "".join(f"<th>{h}</th>" for h in header)
    if groups:
        head = "".join(f'<th colspan="{n}">{h}</th>' for h, n in groups) + f"</tr><tr>{head}"
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i >= numeric_from else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def figure(path: Path, alt: str, caption: str = "") -> str:
    """The PNG embedded as a data URI; a visible note instead of a broken image when the file is missing."""
    if not path.is_file():
        return f'<p class="missing">Figure missing: {escape(path.name)}</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{escape(alt)}">{caption}</figure>'


def eps_header(eps: list[float]) -> list[str]:
    return [f"eps={escape(f'{e:g}')}" for e in eps]


def rate_cells(eps: list[float], by_eps: dict[float, Rate]) -> list[str]:
    return [escape(by_eps[e]) if e in by_eps else "-" for e in eps]


def flat(d: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as (dotted key, text) rows; numbers kept short."""
    rows = []
    for key, value in d.items():
        if isinstance(value, dict) and value:
            rows += flat(value, f"{prefix}{key}.")
        else:
            if isinstance(value, float):
                text = f"{value:.4g}"
            else:
                text = value if isinstance(value, str) else json.dumps(value)
            rows.append((f"{prefix}{key}", text))
    return rows


def kv_table(d: dict) -> str:
    return table(["", "value"], [[escape(k), f"<code>{escape(v)}</code>"] for k, v in flat(d)], numeric_from=99)


def status(status: str, text: str) -> str:
    return f'<span class="status {escape(status)}">{escape(text)}</span>'


def checks_summary(checks: list[Check]) -> str:
    counts = {}
    for check in checks:
        counts[check.status] = counts.get(check.status, 0) + 1
    return " ".join(status(s, f"{n} {s}") for s, n in sorted(counts.items()))


def card(label: str, rate: Rate) -> str:
    low, high = rate.ci95
    return (f'<div class="card">{escape(label)}<div class="big">{100 * rate.value:.1f}%</div>'
            f'<div class="ci">95% CI [{100 * low:.1f}, {100 * high:.1f}], n = {rate.n}</div></div>')


def worst_by_eps(results: Results) -> dict[float, Rate]:
    return results.robustness.by_eps(WORST_CASE) if WORST_CASE in results.robustness.rates else {}
