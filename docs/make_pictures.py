"""Make the pictures README and docs/inspect-gates.md show, from a trained run:

* docs/inspect-gates-terminal.png: `charlstm inspect-gates` on a terminal (the rich output
  recorded as HTML, then drawn by Chromium);
* docs/inspect-gates-report.png: the top of the `--html` report;
* docs/surprise.png: the report's "What the model expected" view, one character hovered.

    python docs/make_pictures.py --checkpoint checkpoints/RUN
    python docs/make_pictures.py --checkpoint RUN --file speech.txt --out /tmp/pictures

Needs Playwright's Python package and Chromium (pip install -e '.[test]'; Debian: apt-get
install chromium). Look at the pictures before committing them.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

from charlstm import inspect, inspect_render
from charlstm.config import InspectConfig

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
TERMINAL_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><style>
body {{ margin: 0; background: #1e1e1e; }}
pre {{ margin: 0; padding: 14px 18px; display: inline-block; color: #e6e6e6; background: #1e1e1e;
      font-family: 'DejaVu Sans Mono', Menlo, Consolas, monospace; font-size: 14px; line-height: 1.2; }}
</style></head><body><pre><code>{code}</code></pre></body></html>
"""


def terminal_page(report: inspect.GateReport, width: int) -> str:
    """What `charlstm inspect-gates` prints on a terminal `width` columns wide, as an HTML page."""
    from rich.console import Console
    from rich.terminal_theme import MONOKAI

    console = Console(record=True, width=width, force_terminal=True, color_system="truecolor", file=io.StringIO())
    console.print("$ charlstm inspect-gates", style="bold")
    for part in [*inspect_render.terminal(report), *inspect_render.tables(report)]:
        console.print(part)
    return console.export_html(theme=MONOKAI, inline_styles=True, code_format=TERMINAL_PAGE)


def hovered_position(report: inspect.GateReport, start: int, end: int) -> int:
    """The most surprising character between `start` and `end`: the one the picture hovers."""
    return next(
        (t for t in inspect_render.most_surprising(report, n=len(report.expected.text)) if start <= t < end), start
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="A .pt file or a run folder (default: the newest run).")
    parser.add_argument("--file", type=Path, help="Text to inspect (default: the run's validation excerpt).")
    parser.add_argument("--length", type=int, default=420, help="Characters of the default passage.")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent, help="Folder for the pictures.")
    parser.add_argument("--width", type=int, default=100, help="Terminal columns.")
    args = parser.parse_args()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sys.exit("make_pictures needs Playwright: pip install -e '.[test]' (and Chromium: apt-get install chromium)")
    config = InspectConfig(length=args.length, show=args.length)
    report = inspect.inspect_gates(args.checkpoint, config, file=args.file)
    report.units = report.units[:2]  # two units keep the terminal picture one screen high
    title = f"charlstm inspect-gates: {report.source}"
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        terminal, page_file = Path(folder) / "terminal.html", Path(folder) / "report.html"
        terminal.write_text(terminal_page(report, args.width), encoding="utf-8")
        page_file.write_text(inspect_render.page(report, title), encoding="utf-8")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1000}, device_scale_factor=1)
        page.goto(terminal.as_uri())
        page.locator("pre").screenshot(path=str(args.out / "inspect-gates-terminal.png"))
        page.goto(page_file.as_uri())
        page.screenshot(path=str(args.out / "inspect-gates-report.png"))
        section, text = page.locator("#surprise"), page.locator("pre.surprise")
        text.scroll_into_view_if_needed()
        page.locator("pre.surprise span.s").nth(hovered_position(report, 40, 250)).hover()
        top, box = section.bounding_box(), text.bounding_box()
        clip = {"x": 0, "y": top["y"] - 10, "width": 1200, "height": box["y"] + box["height"] - top["y"] + 30}
        page.screenshot(path=str(args.out / "surprise.png"), clip=clip)
        browser.close()
    for name in ("inspect-gates-terminal.png", "inspect-gates-report.png", "surprise.png"):
        print(args.out / name)


if __name__ == "__main__":
    main()
