"""Every number the README quotes from the committed run links to the report it comes from, and that
report holds it: a README that still quotes an earlier run fails here, not in a reader's hands."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# [text with a number](reports/<file>): a quoted result and where it was measured
QUOTE = re.compile(r"\[([^\]]*\d[^\]]*)\]\((reports/[^)#]+)(?:#[^)]*)?\)")


def quotes(text: str) -> list[tuple[str, str]]:
    return QUOTE.findall(text)


def normalise(text: str) -> str:
    """Markdown tables escape nothing we quote, but the README may break a line inside a quote, and
    negative numbers may be written with a minus sign or a hyphen."""
    return re.sub(r"\s+", " ", text).replace("−", "-")


def test_the_pattern_finds_quotes_and_only_quotes():
    text = ("FD [140.2 ± 4.3](reports/results.md) and [`reports/index.md`](reports/index.md) and "
            "[12 %](reports/figures/02/findings.md#x)")
    assert quotes(text) == [("140.2 ± 4.3", "reports/results.md"), ("12 %", "reports/figures/02/findings.md")]


def test_every_quoted_number_is_in_its_report():
    readme = (ROOT / "README.md").read_text()
    found = quotes(readme)
    assert len(found) >= 10, "the README quotes the committed run's numbers as [number](reports/file) links"
    missing = []
    for number, report in found:
        path = ROOT / report
        if not path.is_file() or normalise(number) not in normalise(path.read_text()):
            missing.append(f"{number!r} not in {report}")
    assert not missing, "README numbers that their reports do not hold: " + "; ".join(missing)
