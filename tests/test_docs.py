"""The documentation: the site builds strictly, its snippets run, its results are generated.

* ``mkdocs build --strict`` (broken links, missing pages or snippets and API references that do
  not resolve fail it), skipped only where mkdocs is not installed (the ``[docs]`` extra);
* every ```` ```python ```` block of the pages a newcomer runs first, and every shell block marked
  ``<!-- docs-test: run -->`` there, runs in order in a scratch directory, so a snippet that breaks
  fails here;
* every generated snippet a page includes is one that ``scripts/docs_results.py`` writes, and what
  it writes states the command, the package version and the machine;
* no history (merges, branches, issue numbers, remarks on other jobs) in the README or the docs.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: Pages whose code runs in the suite (python blocks always; shell blocks when marked).
EXECUTABLE_PAGES = ["README.md", "docs/getting-started.md", "docs/environment.md", "docs/fleet.md"]
RUN_MARK = "<!-- docs-test: run -->"
FENCE = re.compile(r"^```(\w+)\s*$")


def code_blocks(path: Path) -> list[tuple[str, int, str, bool]]:
    """``(language, first line number, code, marked to run)`` of every fenced block of a page."""
    blocks, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match:
            marked = any(lines[j].strip() == RUN_MARK for j in range(max(0, i - 2), i))
            start, body = i + 1, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            blocks.append((match.group(1), start + 1, "\n".join(body) + "\n", marked))
        i += 1
    return blocks


def test_the_block_reader_finds_marked_shell_blocks_and_python(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("text\n\n```python\nx = 1\n```\n\n<!-- docs-test: run -->\n```bash\necho hi\n```\n"
                    "\n```bash\nrm -rf /\n```\n")
    assert [(lang, line, marked) for lang, line, _, marked in code_blocks(page)] == [
        ("python", 4, False), ("bash", 9, True), ("bash", 13, False)]


def _run_page(page: str, workdir: Path) -> None:
    path = ROOT / page
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    # `autoscale` is the package's own CLI, whatever is (or is not) installed on PATH
    shell_prelude = f'set -euo pipefail\nautoscale() {{ "{sys.executable}" -m agents.cli "$@"; }}\n'
    namespace: dict = {"__name__": "__docs__"}
    ran = 0
    for lang, line, code, marked in code_blocks(path):
        where = f"{page}:{line}"
        if lang == "python":
            exec(compile(code, where, "exec"), namespace)  # noqa: S102 (our own docs)
            ran += 1
        elif lang == "bash" and marked:
            done = subprocess.run(["bash", "-c", shell_prelude + code], cwd=workdir, env=env,
                                  capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, (f"{where}: exit {done.returncode}\n{code}\n"
                                          f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
            ran += 1
    assert ran, f"{page} has no code the suite runs"


@pytest.mark.parametrize("page", [
    "README.md",
    "docs/environment.md",
    pytest.param("docs/getting-started.md", marks=pytest.mark.slow),
    pytest.param("docs/fleet.md", marks=pytest.mark.slow),
])
def test_the_snippets_of_the_page_run(page, tmp_path, monkeypatch):
    if page == "docs/fleet.md":
        pytest.importorskip("pettingzoo")
    assert page in EXECUTABLE_PAGES
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    _run_page(page, tmp_path)


# ---- the site -----------------------------------------------------------------------------------


def nav_pages() -> list[str]:
    """The Markdown files ``mkdocs.yml``'s nav names (read without a YAML parser)."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text.split("\nnav:\n", 1)[1].split("\n\n", 1)[0]
    return re.findall(r":\s*([\w./-]+\.md)\s*$", nav, flags=re.M)


def test_the_nav_lists_the_pages_a_user_needs():
    pages = set(nav_pages())
    for page in ("index.md", "getting-started.md", "environment.md", "agents.md", "results.md",
                 "benchmarks.md", "world.md", "calibration.md", "trust.md", "fleet.md", "live.md",
                 "own-device.md", "performance.md", "reliability.md", "architecture.md", "api.md",
                 "changelog.md"):
        assert page in pages, f"mkdocs.yml's nav lacks {page}"


def test_the_api_reference_covers_the_public_faces():
    api = (DOCS / "api.md").read_text()
    for target in ("autoscale_env.env.AutoScaleEnv", "autoscale_env.vector.AutoScaleVectorEnv",
                   "autoscale_env.fleet.parallel_env", "autoscale_env.fleet.core.FleetCore",
                   "autoscale_env.world.types.Backend", "agents.base"):
        assert f"::: {target}\n" in api, f"docs/api.md documents no {target}"


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    missing = [p for p in nav_pages() if not (DOCS / p).is_file()]
    assert not missing, f"in mkdocs.yml's nav but not in docs/: {', '.join(missing)}"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert (tmp_path / "site" / "api" / "index.html").read_text().count("AutoScaleEnv") > 1


# ---- generated results --------------------------------------------------------------------------


def _docs_results():
    spec = importlib.util.spec_from_file_location("docs_results", ROOT / "scripts" / "docs_results.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("docs_results", module)  # dataclasses look their module up there
    spec.loader.exec_module(sys.modules["docs_results"])
    return sys.modules["docs_results"]


def test_every_included_snippet_is_one_the_script_writes():
    products = {p.name for p in _docs_results().PRODUCTS}
    included = set()
    for page in DOCS.glob("*.md"):
        included |= set(re.findall(r'--8<-- "generated/([\w-]+)\.md"', page.read_text()))
    assert included, "no page includes a generated snippet"
    assert included <= products, f"included but never generated: {sorted(included - products)}"
    assert not re.search(r"!\[[^\]]*\]\((?!generated/)[^)]*\.png\)",
                         (DOCS / "results.md").read_text()), "a hand-made figure on results.md"


def test_the_script_writes_a_snippet_that_says_how_it_was_made(tmp_path):
    import autoscale_env
    module = _docs_results()
    code = module.main(["--quick", "--only", "validate", "--runs", str(tmp_path / "runs"),
                        "--generated", str(tmp_path / "generated")])
    assert code == 0
    text = (tmp_path / "generated" / "validate.md").read_text()
    assert "`autoscale validate`" in text
    assert f"autoscale-env {autoscale_env.__version__}" in text
    assert os.uname().sysname in text and f"{os.cpu_count()} CPUs" in text
    assert "| device | quantity |" in text  # the command's table itself
    # --render-only rewrites it from the recorded run without running anything
    (tmp_path / "generated" / "validate.md").unlink()
    assert module.main(["--render-only", "--only", "validate", "--runs", str(tmp_path / "runs"),
                        "--generated", str(tmp_path / "generated")]) == 0
    assert (tmp_path / "generated" / "validate.md").read_text() == text


def test_the_script_refuses_an_unknown_product(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _docs_results().main(["--only", "nonsense", "--runs", str(tmp_path)])
    assert "valid: main_job" in capsys.readouterr().err


# ---- no history in the manual -------------------------------------------------------------------

HISTORY = re.compile(r"merged main|branch i[0-9]|other jobs|Issue #[0-9]")


def test_the_readme_and_the_docs_carry_no_history():
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in pages
             for n, line in enumerate(p.read_text().splitlines(), 1) if HISTORY.search(line)]
    assert not found, "history belongs in CHANGELOG.md:\n" + "\n".join(found)


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    # the two set-up commands, verbatim as CI runs the second
    ci = (ROOT / ".ci" / "run").read_text()
    second = next(line for line in ci.splitlines() if line.startswith("python3 -m venv"))
    assert second in readme
    assert ("python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt "
            "'.[plots,tensorboard]' && .venv/bin/autoscale benchmark --out runs/benchmark --force"
            ) in readme


def test_the_readme_says_how_long_the_set_up_takes_on_its_first_screen():
    first_screen = " ".join((ROOT / "README.md").read_text().splitlines()[:40])
    assert "about 30 seconds" in first_screen      # the main job, after the install
    assert "about 7 minutes" in first_screen       # the whole suite, on a fresh clone
    assert "prints nothing" in first_screen        # the quiet install, so nobody thinks it hung


#: A shell block after this mark may write into the repository's own files (a maintainer's
#: command that regenerates bundled data); a guide for users never does.
MAINTAINER_MARK = "<!-- docs: maintainer command -->"
TRACKED = ("agents/", "autoscale_env/", "docs/", "scripts/", "tests/", "traces/")


def test_guides_write_their_outputs_outside_the_repository_files():
    offending = []
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        lines = page.read_text().splitlines()
        for lang, line, code, _ in code_blocks(page):
            if lang not in ("bash", "sh", "console") or any(
                    lines[j].strip() == MAINTAINER_MARK for j in range(max(0, line - 4), line - 1)):
                continue
            for flag, target in re.findall(r"(--out|--figure)[ =](\S+)", code):
                if target.lstrip("./").startswith(TRACKED):
                    offending.append(f"{page.relative_to(ROOT)}:{line}: {flag} {target}")
    assert not offending, ("a guide writes into the repository's files (write under runs/, or "
                           "mark a maintainer's command):\n" + "\n".join(offending))
