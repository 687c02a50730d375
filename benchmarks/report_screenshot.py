"""Render an inspect-gates HTML report in headless Chromium and save a screenshot, to see
that the page a user opens actually draws (heat-maps, scatter plot, tables), and time the
trace. Needs Chromium (Debian: `apt-get install chromium`); without it, says so and exits 0.
The pictures docs/ shows are made by docs/make_pictures.py.

    python benchmarks/report_screenshot.py --checkpoint checkpoints/RUN --out /tmp/report.png
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", type=Path, default=Path("report.png"))
    parser.add_argument("--length", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.html"
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "charlstm",
                "inspect-gates",
                "--checkpoint",
                args.checkpoint,
                "--length",
                str(args.length),
                "--show",
                "1500",
                "--html",
                str(report),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - start
        row = {
            "benchmark": "report",
            "characters": args.length,
            "inspect_seconds": round(seconds, 2),
            "html_bytes": report.stat().st_size,
        }
        browser = shutil.which("chromium") or shutil.which("chromium-browser")
        if browser:
            subprocess.run(
                [
                    browser,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                    f"--user-data-dir={folder}/profile",
                    f"--screenshot={args.out.resolve()}",
                    "--window-size=1200,1600",
                    report.as_uri(),
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
            row["screenshot"] = str(args.out)
        else:
            row["screenshot"] = None
            print("chromium not found; report written and timed, no screenshot", file=sys.stderr)
        print(json.dumps(row))


if __name__ == "__main__":
    main()
