"""Demo corpus builder on a small fake site-packages tree: extraction, cleaning, dedup, outputs, CLI."""

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mosaicbert.demo.corpus import (CORPUS_FILE, build_demo_corpus, demo_corpus_exists, is_prose,
                                         markup_to_paragraphs, python_docstrings)
from mosaicbert.errors import RecipeError

from conftest import load_script

SHARED = "This paragraph is shared by two packages and must appear only once in the whole corpus."
PROSE = {  # each file gets enough prose (>= 200 characters) to be kept as a document
    "alpha_module": "The alpha package computes the area of a garden from the lengths of its sides.",
    "alpha_class": "A gardener keeps track of the plants that grow in each bed of the garden.",
    "alpha_func": "Return the number of flowers that are open in the morning, counted by hand.",
    "alpha_param": "The name of the bed, which is written on a small sign next to the path.",
    "beta_doc": "Beta is a small library that helps people write letters to their friends. It was "
                "written by a group of volunteers who wanted to send more letters, and it is still looked after "
                "by them, year after year, in their free time.",
    "readme": "This guide explains how the project is organised and where to find the examples. "
              "Each chapter starts with a short story and ends with a few questions for the reader.",
    "readme2": "When you are done with the guide, you can read the notes that the authors left for you.",
    "rst": "The scheduler runs each task once and records how long it took in the log file.",
    "rst2": "If a task fails, the scheduler waits for a minute and then it tries to run the task again, "
            "up to three times, before it gives up and sends an email to the person on call.",
    "metadata": "Gamma is a tool for keeping notes, and it stores every note as a plain text file. The "
                "files are kept in one folder so that they are easy to find, to copy and to back up.",
    "metadata2": "Notes can be tagged with words, and a search finds every note that carries a given tag.",
}
JUNK = ["print(x)", "Gesundheit ist das wichtigste Gut, das wir haben, sagte sie und lachte dabei laut.",
        "MIT License granted", "vocabularyword", "should_not_appear_in_tests_dir", "http://example.com",
        "import os", "a_b_c(d) = e[f] + g{h}"]


def make_site_packages(root: Path) -> Path:
    """A fake site-packages with docstrings, markdown, reST, METADATA and things to skip."""
    def write(rel, text):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))

    write("alpha/__init__.py", f'''
        """{PROSE["alpha_module"]}

        >>> print(x)
        42

        Example::

            import os
            area = a_b_c(d) = e[f] + g{{h}}
        """

        class Gardener:
            """{PROSE["alpha_class"]}

            {SHARED}
            """

            def flowers(self, bed):
                """{PROSE["alpha_func"]}

                Args:
                    bed (str):
                        {PROSE["alpha_param"]}

                Returns:
                    int
                """
                return 1
        ''')
    write("alpha/broken.py", 'def oops(:\n    """Never parsed, because this file has a syntax error here."""\n')
    write("beta.py", f'"""{PROSE["beta_doc"]}\n\n{SHARED}\n\n{JUNK[1]}\n"""\n')
    write("beta/tests/test_beta.py", f'"""{JUNK[4]} is a sentence in a test module of the package."""\n')
    write("beta/README.md", f"""
        # Beta

        {PROSE["readme"]} See the [documentation](http://example.com) and ![logo](logo.png).

        {PROSE["readme2"]}

        ```python
        import os
        print(x)
        ```

        | column | other |
        |--------|-------|
        | a      | b     |
        """)
    write("beta/docs/guide.rst", f"""
        Scheduler
        =========

        {PROSE["rst"].replace("task", ":func:`~sched.task`")}

        .. code-block:: python

            import os

        {PROSE["rst2"]}

        .. note::

           {JUNK[3]} inside a directive body, which is skipped entirely.
        """)
    write("beta/LICENSE.txt", f"{JUNK[2]} to any person obtaining a copy of this software and the files.\n")
    write("beta/vocab.txt", "\n".join([JUNK[3]] * 50) + "\n")
    write("gamma-1.0.dist-info/METADATA",
          f"Metadata-Version: 2.1\nName: gamma\nVersion: 1.0\n\n{PROSE['metadata']}\n\n{PROSE['metadata2']}\n")
    write("gamma-1.0.dist-info/RECORD", "gamma/__init__.py,,\n")
    return root


pytestmark = pytest.mark.usefixtures("fresh_shared_memory")


def read_corpus(out: Path):
    with gzip.open(out / CORPUS_FILE, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def build(site, out, **kwargs):
    options = dict(roots=[site], chunk_chars=120, val_fraction=0.3, train_small=3, val_small=2, workers=1,
                   progress=False)
    return build_demo_corpus(out, **{**options, **kwargs})


def test_builds_clean_deduplicated_prose(tmp_path):
    site = make_site_packages(tmp_path / "site-packages")
    summary = build(site, tmp_path / "demo")
    docs = read_corpus(tmp_path / "demo")
    text = "\n".join(d["text"] for d in docs)
    for sentence in PROSE.values():
        assert sentence in text, sentence
    assert text.count(SHARED) == 1
    for junk in JUNK:
        assert junk not in text, junk
    for markup in (">>>", "```", "::", "**", "`", "[", "](", "|", "==", "#", "http"):
        assert markup not in text, markup
    assert [d["source"] for d in docs] == ["alpha/__init__.py", "beta.py", "beta/README.md",
                                           "beta/docs/guide.rst", "gamma-1.0.dist-info/METADATA"]
    assert all("\n\n" not in d["text"] and "  " not in d["text"] for d in docs)
    assert summary.documents == len(docs) and summary.characters == sum(len(d["text"]) for d in docs)
    assert summary.duplicate_paragraphs == 1
    assert "documents" in str(summary) and "characters" in str(summary)
    # MDS splits exist and hold every chunk.
    assert demo_corpus_exists(tmp_path / "demo")
    assert summary.split_samples["train"] + summary.split_samples["val"] >= len(docs)
    assert summary.split_samples["train_small"] <= 3


def test_short_documents_are_dropped_and_budget_respected(tmp_path):
    site = make_site_packages(tmp_path / "site-packages")
    short = "A short note about the garden, kept in a file of its own, is read but too short to keep."
    assert 80 < len(short) < 200  # prose that passes every other filter, below the 200-character minimum
    (site / "delta").mkdir()
    (site / "delta" / "README.md").write_text(short + "\n")
    full = build(site, tmp_path / "all")
    assert "delta/README.md" not in {d["source"] for d in read_corpus(tmp_path / "all")}
    assert full.documents == len(read_corpus(tmp_path / "all")) == 5  # the five long files of the fixture
    summary = build(site, tmp_path / "demo", max_chars=1)  # stops after the first kept document
    assert summary.documents == 1
    docs = read_corpus(tmp_path / "demo")
    assert all(len(d["text"]) >= 200 for d in docs)


def test_deterministic_and_independent_of_workers(tmp_path):
    site = make_site_packages(tmp_path / "site-packages")
    build(site, tmp_path / "one", workers=1)
    build(site, tmp_path / "two", workers=2)
    assert (tmp_path / "one" / CORPUS_FILE).read_bytes() == (tmp_path / "two" / CORPUS_FILE).read_bytes()


READERS_UNDER_COMPOSER = """
import sys
from pathlib import Path
import composer  # installs a SIGTERM handler (sys.exit) that forked workers inherit
from mosaicbert.demo import corpus

site = [Path(sys.argv[1])]
for _ in range(40):
    corpus.collect_documents(site, max_chars=10**9, workers=8)

def failing_job(path):
    raise OSError("unreadable")

corpus._file_job = failing_job  # the workers are forked after this, so they run it too
for _ in range(20):
    try:
        corpus.collect_documents(site, max_chars=10**9, workers=8)
    except OSError:
        continue
    raise AssertionError("the workers' error did not reach the caller")
print("done")
"""


def test_reading_workers_always_end_in_a_process_that_imported_composer(tmp_path):
    """Composer's import installs a SIGTERM handler; the reading pool's workers inherited it, and ending
    the pool with terminate() then hung in join() now and then (with 8 workers, within the first 40 builds
    in every try). Here 40 builds and 20 builds whose workers fail must all return."""
    site = make_site_packages(tmp_path / "site-packages")
    process = subprocess.Popen([sys.executable, "-c", READERS_UNDER_COMPOSER, str(site)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the hung workers too
        process.communicate()
        pytest.fail("building the demo corpus with 8 workers hung")
    assert process.returncode == 0 and out.strip() == "done", err[-2000:]


def test_refuses_to_overwrite_and_cli_skip(tmp_path, capsys):
    site = make_site_packages(tmp_path / "site-packages")
    out = tmp_path / "demo"
    build(site, out)
    before = (out / CORPUS_FILE).stat().st_mtime_ns
    with pytest.raises(RecipeError, match="--overwrite"):
        build(site, out)
    assert (out / CORPUS_FILE).stat().st_mtime_ns == before
    build(site, out, overwrite=True)

    cli = load_script("scripts/build_demo_corpus.py")
    assert cli.main(["--out_root", str(out), "--skip_existing"]) == 0
    assert "exists, skipping" in capsys.readouterr().out
    assert cli.main(["--out_root", str(out), "--roots", str(site)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert not demo_corpus_exists(tmp_path / "elsewhere")


def test_markup_cleaning_units():
    rst = textwrap.dedent("""
        Title
        -----

        Use :class:`~pkg.mod.Thing` with ``value`` and `a link <http://x.y>`_ to see *why* it matters.
        Continued on a second line.

        - first item of the list, which is long enough
        - second item

        Parameters
        ----------
        x : int
            The value that is used.
        """)
    paragraphs = markup_to_paragraphs(rst)
    assert "Use Thing with value and a link to see why it matters. Continued on a second line." in paragraphs
    assert "first item of the list, which is long enough" in paragraphs
    assert "The value that is used." in paragraphs
    assert "Title" not in paragraphs and not any("x : int" in p for p in paragraphs)
    assert not is_prose("Parameters")
    assert is_prose("The function returns the sum of all the values that are stored in the list.")
    assert not is_prose("returns the sum")  # too short
    assert not is_prose("self.values = [compute_value(x) for x in range(10)] if cond else {}; return x.")
    assert not is_prose("Die Funktion gibt die Summe aller Werte zurück, die in der Liste stehen.")
    assert not is_prose("The function returns the sum of all the values that are stored in the list")
    assert python_docstrings("def f(:\n") == []
    assert python_docstrings('"""Mod."""\nclass A:\n    """Cls."""\n    def f(self):\n        """Fn."""\n') == [
        "Mod.", "Cls.", "Fn."]
