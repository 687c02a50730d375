"""Make docs/serve-playground.png: the playground of `charlstm serve`, after it wrote a passage.

Starts the server on a free loopback port, opens the page in headless Chromium (tests/browser.py),
types the prime, presses Generate, waits for the text, and photographs the page with the
characters coloured by the chosen view (a unit the unit finder offers, by its position in the
list, or surprise).

    python docs/serve_picture.py --checkpoint checkpoints/RUN
    python docs/serve_picture.py --checkpoint RUN --prime "KING RICHARD:" --view surprise --out /tmp/p.png

Needs Playwright's Python package and Chromium (pip install -e '.[test]'). Look at the picture
before committing it.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.browser

from charlstm import serve
from charlstm.serve_config import ServeConfig
from tests.browser import open_page

WAIT_MS = 120_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="A .pt file or a run folder (default: the newest run).")
    parser.add_argument("--prime", default="ROMEO:\n")
    parser.add_argument("--length", type=int, default=600)
    parser.add_argument("--view", default="0", help="A unit's place in the page's list (0: the first), or surprise.")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "serve-playground.png")
    args = parser.parse_args()
    server = serve.start(args.checkpoint, ServeConfig(port=0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with open_page() as page:
            page.set_viewport_size({"width": 1100, "height": 900})
            page.open(server.url)
            page.wait_for_function("document.getElementById('status').textContent === 'ready'", timeout=WAIT_MS)
            page.fill("#prime", args.prime)
            page.fill("#length", str(args.length))
            page.select_option("#view", args.view)
            page.click("#generate")
            page.wait_for_function("!document.getElementById('continue').disabled", timeout=WAIT_MS)
            page.screenshot(path=str(args.out), full_page=True)
            page.assert_no_errors()
    finally:
        server.shutdown()
        server.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
