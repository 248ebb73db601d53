"""Screenshot the latent-space explorer (notebook 05) running in JupyterLab.

Needs playwright (``pip install playwright``) and a Chromium binary (e.g. Debian's ``chromium``;
``playwright install`` is not required). Start JupyterLab on a copy of the notebook whose parameters
cell points at trained runs, then run this script::

    jupyter lab --no-browser --port 8899 --ServerApp.token=cxrnb --ServerApp.ip=127.0.0.1 notebooks/
    python docs/screenshots/take_screenshots.py _screenshot_05.ipynb

It opens the notebook, runs all cells (Run > Run All Cells), waits for the kernel to finish,
scrolls the explorer widgets into view (``--names``: one name per explorer, in notebook order:
VAE, GMVAE, GAN) and for each saves ``latent_explorer_<name>.png``; then it types a value into that
explorer's first slider readout and saves ``latent_explorer_<name>_slider_moved.png``.
Options: ``--url``, ``--token``, ``--chromium``, ``--out``, ``--timeout`` (seconds, for the run).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def input_prompts(page) -> list[str]:
    """Every code cell's prompt: ``[ ]:`` not run, ``[*]:`` running, ``[3]:`` done."""
    return page.eval_on_selector_all(".jp-CodeCell .jp-InputPrompt", "els => els.map(e => e.textContent.trim())")


def wait_until_run(page, timeout: float) -> None:
    """Until every code cell has an execution count and none shows ``[*]``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        prompts = input_prompts(page)
        if prompts and all(p not in ("[ ]:", "[*]:", "") for p in prompts):
            return
        page.wait_for_timeout(2000)
    raise TimeoutError(f"cells still running after {timeout:.0f}s: {prompts}")


def dismiss_toasts(page) -> None:
    """Close JupyterLab's pop-ups ("get notified about official Jupyter news?" and the like)."""
    for button in page.locator(".Toastify button:text-is('No'), .Toastify .jp-toast-button").all():
        if button.is_visible():
            button.click()
    page.wait_for_timeout(500)


def shoot(page, explorer, stem: Path) -> None:
    """Screenshot one explorer as it is, then again after its first slider is set to 2.5."""
    page.evaluate("el => el.scrollIntoView({block: 'center'})", explorer.element_handle())
    page.wait_for_timeout(1500)
    dismiss_toasts(page)
    page.mouse.move(0, 0)
    page.screenshot(path=f"{stem}.png")

    image = explorer.locator(".widget-image img, img.widget-image").first
    before = image.get_attribute("src")
    readout = explorer.locator(".widget-readout").first
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("2.5")
    page.keyboard.press("Enter")
    deadline = time.time() + 120
    while image.get_attribute("src") == before and time.time() < deadline:
        page.wait_for_timeout(500)
    page.wait_for_timeout(1000)
    page.mouse.move(0, 0)
    page.screenshot(path=f"{stem}_slider_moved.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", help="path relative to the JupyterLab root")
    parser.add_argument("--url", default="http://127.0.0.1:8899")
    parser.add_argument("--token", default="cxrnb")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--names", default="vae,gmvae,gan", help="comma-separated, one per explorer")
    args = parser.parse_args()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(args.timeout * 1000)
        page.goto(f"{args.url}/lab/tree/{args.notebook}?token={args.token}")
        page.wait_for_selector(".jp-Notebook .jp-CodeCell")
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")
        for _ in range(5):        # on a fresh server the first Run All can land before the kernel is up
            page.click(".lm-MenuBar-itemLabel:text-is('Run')")
            page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
            page.wait_for_timeout(5000)
            if any(p != "[ ]:" for p in input_prompts(page)):
                break
        wait_until_run(page, args.timeout)

        explorers = page.locator(".widget-hbox:has(.widget-slider):has(.widget-image)")
        explorers.first.wait_for(state="visible")
        for i, name in enumerate(args.names.split(",")):
            shoot(page, explorers.nth(i), args.out / f"latent_explorer_{name}")
        browser.close()


if __name__ == "__main__":
    main()
