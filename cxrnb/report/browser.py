"""Notebook 05 in a real browser, driven as a researcher drives it: JupyterLab started on a port of
its own, a notebook opened in headless Chromium (Playwright), all cells run, and every explorer
(``widgets.EXPLORER_CLASS``) worked with the mouse: its first visible slider dragged, its first menu
given another entry. What each interaction changed, and how long the image took to follow the slider
(from the mouse event to the new image in the page), comes back as an ``Interaction``; the test suite
asserts on them (tests/test_browser.py) and the README's screenshots are taken by the same calls.

Needs ``pip install playwright`` (the Python package only: no browser download) and a Chromium
binary, e.g. Debian's (``apt-get install chromium``: /usr/bin/chromium). Screenshots of trained runs::

    python -m cxrnb.report.browser --runs-dir runs/study --data-root $CXR14_ROOT --out docs/screenshots
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

from cxrnb.errors import CxrnbError
from cxrnb.study.explore import VISIBLE
from cxrnb.study.widgets import DELTA_CLASS, EXPLORER_CLASS, IMAGE_CLASS, TIMING_CLASS

CHROMIUM = "/usr/bin/chromium"
# Chromium as this project's machines allow it: no sandbox as root, no network beyond localhost
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DRAG_STEPS = 6          # mouse moves while a slider is held, each timed
STEP_PX = 6             # how far each move goes
RELEASE_DRAG_PX = 24    # each drag of a slider that redraws on release only (several of its steps)


def missing() -> str | None:
    """Why a browser run cannot happen here, or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; no browser download needed)"
    if chromium() is None:
        return f"no Chromium at {CHROMIUM} or on PATH (apt-get install chromium)"
    return None


def chromium() -> str | None:
    return CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Server:
    """A running JupyterLab: where it listens and the token it wants."""

    url: str
    token: str
    root: Path


@contextmanager
def jupyterlab(root: Path, timeout: float = 120.0) -> Iterator[Server]:
    """JupyterLab serving ``root`` on a free localhost port with a token of its own, for as long as
    the block runs. Its settings, workspaces and kernelspecs are its own too (folders under ``root``),
    so a user's ~/.jupyter changes nothing; its log is ``root/jupyterlab.log``."""
    root, port, token = Path(root), _free_port(), secrets.token_urlsafe(16)
    home = {f"JUPYTER{k}": str(root / ".jupyter" / v) for k, v in
            (("_CONFIG_DIR", "config"), ("_DATA_DIR", "data"), ("LAB_SETTINGS_DIR", "settings"),
             ("LAB_WORKSPACES_DIR", "workspaces"))}
    url, proc = f"http://127.0.0.1:{port}", None
    with open(root / "jupyterlab.log", "w") as log:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ServerApp.port_retries=0",
                 "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                 "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
                + (["--allow-root"] if os.geteuid() == 0 else []),      # CI containers run as root
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **home, "JUPYTER_PLATFORM_DIRS": "1"})
            deadline = time.time() + timeout
            while True:
                try:
                    urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                    break
                except OSError:
                    if proc.poll() is not None or time.time() > deadline:
                        raise CxrnbError(f"JupyterLab did not start: see {log.name}") from None
                    time.sleep(0.5)
            yield Server(url, token, root)
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()


@contextmanager
def browser_page(width: int = 1400, height: int = 1000) -> Iterator:
    """A fresh headless Chromium page."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=FLAGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def _prompts(page) -> list[str]:
    """Every code cell's prompt: ``[ ]:`` not run, ``[*]:`` running, ``[3]:`` done."""
    return page.eval_on_selector_all(".jp-CodeCell .jp-InputPrompt", "els => els.map(e => e.textContent.trim())")


def _start_kernel(server: Server, notebook: str, kernel: str = "python3") -> None:
    """A session with its kernel for ``notebook``, made through the server's REST API before the page
    opens it: the page then joins it instead of asking which kernel to start ("Select Kernel").

    It does not wait for the kernel here: the server reports a kernel "starting" until a client
    connects to it, however long ago it started, so the page's own status indicator is what
    ``run_notebook`` waits on."""
    request = urllib.request.Request(
        f"{server.url}/api/sessions", method="POST",
        data=json.dumps({"path": notebook, "type": "notebook", "name": "", "kernel": {"name": kernel}}).encode(),
        headers={"Authorization": f"token {server.token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60):
        pass


def _accept_dialogs(page) -> None:
    """Accept any dialog JupyterLab opened (e.g. "Select Kernel" while the first kernel starts),
    saying what it asked."""
    for dialog in page.locator(".jp-Dialog").all():
        if dialog.is_visible():
            print(f"JupyterLab asked: {' '.join(dialog.inner_text().split())[:200]!r}; accepted")
            dialog.locator(".jp-Dialog-button.jp-mod-accept").first.click()
            try:
                dialog.wait_for(state="hidden", timeout=10_000)
            except Exception:      # playwright's TimeoutError: the button did not take; Enter accepts too
                page.keyboard.press("Enter")


def run_notebook(page, server: Server, notebook: str, timeout: float = 600.0) -> None:
    """Open ``notebook`` (relative to the server's root), Run > Run All Cells, wait until no cell is
    left running, and save it, waiting until the save has landed (so ``cell_errors`` reads this run's
    outputs from disk). A Run All that never starts raises."""
    page.set_default_timeout(60_000)
    _start_kernel(server, notebook)
    page.goto(f"{server.url}/lab/tree/{notebook}?reset&token={server.token}")   # reset: no earlier tabs
    page.wait_for_selector(".jp-Notebook .jp-CodeCell")
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=timeout * 1000)
    for _ in range(3):             # a Run All can stop short without an error on a loaded machine
        _run_all(page, notebook, timeout)
        page.keyboard.press("Control+s")
        page.wait_for_selector(".lm-TabBar-tab.jp-mod-current:not(.jp-mod-dirty)", timeout=30_000)
        page.wait_for_timeout(500)
        left = cell_errors(server.root / notebook)
        if not left or not all(e.endswith("did not run") for e in left):
            return                 # all ran, or a cell raised: cell_errors says which
        print(f"{notebook}: Run All stopped short ({left[0]}, ...), without an error; run again")


def _run_all(page, notebook: str, timeout: float) -> None:
    """Run > Run All Cells, then wait until no cell is left running."""
    for _ in range(10):            # on a fresh server the first Run All can land before the kernel is up
        _accept_dialogs(page)
        try:
            page.click(".lm-MenuBar-itemLabel:text-is('Run')", timeout=5000)
            page.click(".lm-Menu-itemLabel:text-is('Run All Cells')", timeout=5000)
        except Exception:          # playwright's TimeoutError: a dialog was in the way; accept it, retry
            page.keyboard.press("Escape")
            continue
        page.wait_for_timeout(3000)
        if any(p != "[ ]:" for p in _prompts(page)):
            break
    else:
        raise CxrnbError(f"Run All Cells never started in {notebook}: prompts {_prompts(page)}")
    deadline, quiet = time.time() + timeout, 0
    while not ((prompts := _prompts(page)) and all(p not in ("[ ]:", "[*]:", "") for p in prompts)):
        idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count() > 0
        quiet = quiet + 1 if idle and "[*]:" not in prompts else 0
        if quiet >= 5:             # nothing running for 5 s with cells left: a cell failed, Run All stopped
            break
        if time.time() > deadline:
            raise TimeoutError(f"cells still running after {timeout:.0f}s: {prompts}")
        page.wait_for_timeout(1000)


def cell_errors(path: Path) -> list[str]:
    """The errors a saved notebook's cells raised, as 'ename: evalue', and every code cell that did
    not run (Run All stops at the first error; a cell never run raised nothing)."""
    cells = [c for c in json.loads(Path(path).read_text())["cells"] if c["cell_type"] == "code"]
    errors = [f"{o['ename']}: {o['evalue']}" for c in cells for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    return errors + [f"code cell {i + 1} did not run" for i, c in enumerate(cells) if c.get("execution_count") is None]


@dataclass
class Interaction:
    """What dragging one explorer's slider and picking from its menu did."""

    index: int                          # the explorer's place in the notebook
    sliders: int                        # visible sliders (0: all folded, and the fold was opened to drag one)
    moves: float                        # the dragged slider's "Δ ... per unit" note: how far it should move the image
    image_changed: bool                 # after the drag
    readout: tuple[str, str]            # the dragged slider's readout, before and after
    delta: tuple[str, str]              # the "Δ ... from the first image" label, before and after
    latencies_ms: list[float] = field(default_factory=list)   # mouse move (or release) -> redraw shown, each
    live: bool = True                   # redrawn while dragged; else on release only
    menu: str | None = None             # the entry picked, when the explorer has a menu
    menu_redrawn: bool | None = None    # whether that redrew the image

    @property
    def latency_ms(self) -> float:
        return median(self.latencies_ms) if self.latencies_ms else float("nan")

    @property
    def should_change(self) -> bool:
        """Whether the dragged slider moves the image visibly (its note says 1% or more per unit)."""
        return self.moves >= VISIBLE

    def problems(self) -> list[str]:
        out = [] if self.latencies_ms else ["no redraw reached the page while the slider was dragged"]
        out += [] if self.readout[0] != self.readout[1] else [f"the readout stayed at {self.readout[0]!r}"]
        if self.should_change:
            out += [] if self.image_changed else ["dragging the slider did not change the image"]
            out += [] if self.delta[0] != self.delta[1] else [f"the Δ label stayed at {self.delta[0]!r}"]
        out += [] if self.menu_redrawn is not False else [f"picking {self.menu!r} did not redraw the image"]
        return [f"explorer {self.index}: {p}" for p in out]

    def line(self) -> str:
        menu = f", menu → {self.menu!r} {'redrew' if self.menu_redrawn else 'did NOT redraw'} it" if self.menu else ""
        shown = f"{self.sliders} visible sliders" if self.sliders else "all sliders folded (< 1%), fold opened"
        return (f"explorer {self.index}: {shown}; drag {self.readout[0]} → {self.readout[1]} (Δ {self.moves:.3f} per "
                f"unit), image {'changed' if self.image_changed else 'unchanged'}, {self.delta[1]}{menu}; "
                f"slider-to-image {self.latency_ms:.0f} ms (median of {len(self.latencies_ms)} "
                f"{'moves' if self.live else 'releases'})")


# every redraw rewrites the panel's timing label ("redraw N: .. ms"); the page clock of each rewrite
_WATCH = """el => { el.__changes = []; new MutationObserver(() => el.__changes.push(performance.now()))
                    .observe(el, {subtree: true, childList: true, characterData: true}); }"""


def _changes(label) -> int:
    return label.evaluate("el => el.__changes.length")


def _wait_redraw(page, label, seen: int, timeout_ms: float) -> float | None:
    """When the panel was redrawn after ``seen`` redraws (page clock, ms), or None on timeout."""
    try:
        page.wait_for_function("([el, n]) => el.__changes.length > n", arg=[label.element_handle(), seen],
                               timeout=timeout_ms)
    except Exception:           # playwright's TimeoutError: no redraw reached the page
        return None
    return label.evaluate("el => el.__changes[el.__changes.length - 1]")


def explorers(page):
    """Every explorer on the page, in notebook order."""
    return page.locator(f".{EXPLORER_CLASS}")


def _moves(note: str) -> float:
    """The number in a slider's note, "Δ 0.150 per unit" -> 0.15."""
    match = re.search(r"Δ\s*([0-9.]+)", note)
    return float(match.group(1)) if match else float("nan")


def exercise(page, explorer, index: int, timeout_ms: float = 10_000) -> Interaction:
    """Drag the explorer's first visible slider (opening the fold when every slider is folded)
    right by ``DRAG_STEPS`` mouse moves, timing each from the move to the redraw on the page; release
    it (a slider that redraws only on release is dragged ``DRAG_STEPS`` times, each release timed);
    then pick the last entry of its first menu."""
    explorer.scroll_into_view_if_needed()
    image = explorer.locator(f"img.{IMAGE_CLASS}").first
    delta = explorer.locator(f".{DELTA_CLASS}").first
    timing = explorer.locator(f".{TIMING_CLASS}").first
    timing.evaluate(_WATCH)
    rows = explorer.locator(".widget-hbox:has(> .widget-slider):visible")
    n_visible = rows.count()
    if not n_visible:
        explorer.locator(".widget-toggle-button").first.click()
        page.wait_for_timeout(300)
    row = explorer.locator(".widget-hbox:has(> .widget-slider):visible").first
    slider = row.locator(".widget-slider")
    notes = row.locator(".widget-label", has_text="Δ").all_inner_texts()
    before_src, before_delta = image.get_attribute("src"), delta.inner_text()
    readout = slider.locator(".widget-readout")
    readout_before = readout.inner_text()
    box = slider.locator(".noUi-handle").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    latencies = []
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(1, DRAG_STEPS + 1):
        seen = _changes(timing)
        began = page.evaluate("performance.now()")
        page.mouse.move(x + step * STEP_PX, y)
        done = _wait_redraw(page, timing, seen, timeout_ms)
        if done is None:                    # not live (or broken): the rest of the drag would wait as long
            page.mouse.move(x + DRAG_STEPS * STEP_PX, y)
            break
        latencies.append(done - began)
    live = bool(latencies)
    seen, began = _changes(timing), page.evaluate("performance.now()")
    page.mouse.up()
    # not live: the image follows each release; time DRAG_STEPS of them, dragging back and forth (a
    # handle at its end still moves) by more than a slider step
    for step in range(1, DRAG_STEPS + 1) if not live else ():
        done = _wait_redraw(page, timing, seen, timeout_ms)
        if done is None:
            break
        latencies.append(done - began)
        if step < DRAG_STEPS:
            handle = slider.locator(".noUi-handle").bounding_box()
            hx, hy = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
            page.mouse.move(hx, hy)
            page.mouse.down()
            page.mouse.move(hx + (-1) ** step * RELEASE_DRAG_PX, hy)
            seen, began = _changes(timing), page.evaluate("performance.now()")
            page.mouse.up()
    page.wait_for_timeout(300)
    interaction = Interaction(index, n_visible, _moves(notes[0]) if notes else float("nan"),
                              image.get_attribute("src") != before_src, (readout_before, readout.inner_text()),
                              (before_delta, delta.inner_text()), latencies, live=live)
    menus = explorer.locator("select:visible")
    if menus.count():
        menu = menus.first
        options = menu.locator("option").all_inner_texts()
        if len(options) > 1:
            seen = _changes(timing)
            menu.select_option(index=len(options) - 1)
            interaction.menu = options[-1].replace("\xa0", " ")
            interaction.menu_redrawn = _wait_redraw(page, timing, seen, timeout_ms) is not None
    return interaction


def exercise_all(page) -> list[Interaction]:
    found = explorers(page)
    return [exercise(page, found.nth(i), i) for i in range(found.count())]


def screenshot(page, explorer, path: Path) -> Path:
    """The explorer as it is on the page, as a PNG."""
    explorer.scroll_into_view_if_needed()
    page.mouse.move(0, 0)
    page.wait_for_timeout(500)
    path.parent.mkdir(parents=True, exist_ok=True)
    explorer.screenshot(path=str(path))
    return path


def parameterised(notebook: Path, out: Path, **parameters) -> Path:
    """A copy of ``notebook`` with ``parameters`` injected after its ``parameters`` cell (papermill's
    own injection, so the copy runs exactly as ``cxrnb reproduce`` would run it)."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(notebook)), parameters)
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    return out


NAMES = ("vae", "vae_interpolation", "gmvae", "gan", "dirvae")   # notebook 05's explorers, in order


def main(argv: list[str] | None = None) -> None:
    from cxrnb.paths import in_repo

    parser = argparse.ArgumentParser(description="Screenshot notebook 05's explorers in JupyterLab (headless "
                                                 "Chromium), after dragging each one's first slider.")
    parser.add_argument("--runs-dir", required=True)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", type=Path, default=in_repo("docs/screenshots"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="further notebook 05 parameters (JSON values), e.g. vae_preset='\"VAE-elbo-beta1\"'")
    args = parser.parse_args(argv)
    if (why := missing()) is not None:
        raise SystemExit(why)
    params = {"runs_dir": str(in_repo(args.runs_dir)), "data_root": args.data_root}
    params |= {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    root = in_repo("reports/.staging/browser")
    shutil.rmtree(root, ignore_errors=True)
    params["reports_dir"], params["saves_dir"] = str(root / "figures"), str(root / "saved")
    nb = parameterised(in_repo("notebooks/05_latent_explorer.ipynb"), root / "05.ipynb", **params)
    with jupyterlab(root) as server, browser_page() as page:
        run_notebook(page, server, nb.name, timeout=1800)
        if errors := cell_errors(nb):
            raise SystemExit("notebook 05 failed: " + "; ".join(errors))
        found = explorers(page)
        for i in range(found.count()):
            name = NAMES[i] if i < len(NAMES) else f"explorer{i}"
            screenshot(page, found.nth(i), args.out / f"latent_explorer_{name}.png")
            print(exercise(page, found.nth(i), i).line())
            screenshot(page, found.nth(i), args.out / f"latent_explorer_{name}_slider_moved.png")


if __name__ == "__main__":
    main()
