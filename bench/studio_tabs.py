"""How many studio tabs one browser can have open over plain HTTP: each tab in turn, until its controls show.

    python -m bench.studio_tabs                 # 8 tabs, 15 s each
    python -m bench.studio_tabs --tabs 10 --wait 20

A one-node stand-in cluster (``launch.py``), its public port over plain HTTP, as a studio on its own network would
use it. One headless Chromium context (``bench.harness.chromium``) opens the studio page in a new tab, one tab after
another, each left open, and times each until its prompt box shows (or ``--wait`` passes). When a tab did not
load, the first tab is closed and the stalled one is timed again (then reloaded and timed once more, if it still
did not load). Chromium opens at most six HTTP/1.1 connections to one site, and an open studio tab holds one for
Gradio's heartbeat. Results: ``bench/results/studio-tabs.md``. Start it under the cluster lock.
"""

from __future__ import annotations

import argparse
import os
from importlib.metadata import version

from playwright.sync_api import Page, sync_playwright

from bench.harness.chromium import chromium_context
from bench.harness.cluster_options import ClusterOptions
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.page_ready import ready_after, ready_row
from bench.report import load_averages, machine_summary, markdown_table, publish

PROG = "python -m bench.studio_tabs"
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--tabs", type=int, default=8, help="tabs to open, one after another (default 8)")
    parser.add_argument("--wait", type=float, default=15.0, help="seconds each tab may take to show (default 15)")
    args = parser.parse_args(argv)
    loads = [os.getloadavg()]
    rows: list[list[str]] = []
    options = ClusterOptions(model="standin:0.2", nodes=1, start_timeout=120)
    with LaunchedCluster(options, name="bench-tabs") as cluster, sync_playwright() as playwright, \
            chromium_context(playwright) as browser:
        url = cluster.public_url + "/"
        stalled: Page | None = None
        tabs: list[Page] = []
        for number in range(1, args.tabs + 1):
            page = browser.new_page()
            tabs.append(page)
            page.goto(url, wait_until="commit")
            seconds = ready_after(page, args.wait)
            rows.append(ready_row(f"tab {number}", seconds, args.wait))
            if seconds is None:
                stalled = page
                break
        if stalled is not None:
            tabs[0].close()
            seconds = ready_after(stalled, args.wait)
            rows.append(ready_row(f"tab {len(rows)}, tab 1 closed", seconds, args.wait))
            if seconds is None:
                stalled.reload(wait_until="commit")
                rows.append(ready_row(f"tab {len(rows) - 1}, reloaded", ready_after(stalled, args.wait), args.wait))
        loads.append(os.getloadavg())
    publish("studio-tabs", [
        "# Studio tabs in one browser over plain HTTP",
        f"`{PROG} --tabs {args.tabs} --wait {args.wait:g}`. {machine_summary()}. Headless Chromium "
        f"(Playwright {version('playwright')}), one context; a one-node stand-in cluster's public port (HAProxy, "
        "plain HTTP).",
        markdown_table(["tab", "controls", "seconds"], rows),
        "Each open studio tab keeps one connection for Gradio's heartbeat, and Chromium opens at most six HTTP/1.1 "
        "connections to one site: past that, a new tab stays on \"Loading...\" until another tab is closed. Over "
        "HTTP/2 (the README's Caddy, HTTPS) the tabs share one connection; not measured here (no Caddy on this "
        "machine).",
        load_averages(loads),
    ])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
