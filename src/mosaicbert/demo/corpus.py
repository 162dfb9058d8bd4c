"""A small offline English corpus from the documentation of the installed Python packages.

Machines without internet access still have plenty of English prose after ``make install``: the
docstrings of every installed module (module, class and function docstrings, read with ``ast``, never
imported) and the ``.md``/``.rst``/``.txt`` documents and package descriptions (``METADATA``) in
site-packages. This module extracts that prose, strips reST/Markdown markup, doctests and code,
keeps paragraphs that look like English sentences, removes exact duplicates and writes

    <out_root>/corpus.jsonl.gz                          {"text": ..., "source": <path in site-packages>}
    <out_root>/{train,val,train_small,val_small}/       MDS splits, via convert.convert_text

Everything is deterministic: files are visited in sorted order (packages interleaved round-robin
so the character budget is spread over many packages instead of the alphabetically first ones),
and the gzip header carries no timestamp. The corpus depends on what is installed, so its size varies
a little between environments.
"""

from __future__ import annotations

import ast
import email.parser
import gzip
import hashlib
import io
import json
import logging
import os
import re
import signal
import string
import sysconfig
import textwrap
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from tqdm.auto import tqdm

from ..data.convert import SPLIT_NAMES, check_outputs, convert_text
from ..errors import RecipeError

log = logging.getLogger(__name__)

CORPUS_FILE = "corpus.jsonl.gz"
DEFAULT_MAX_CHARS = 10_000_000
DEFAULT_CHUNK_CHARS = 600  # ~128 WordPiece tokens of English: little is truncated at max_seq_len 128
CHARS_PER_TOKEN = 4.4  # bert-base-uncased on this kind of text (measured); for the summary only

MAX_FILE_BYTES = 2_000_000  # larger .py files are generated tables, not documentation
MIN_PARAGRAPH_CHARS = 40
MAX_PARAGRAPH_CHARS = 4000  # longer "paragraphs" are word lists (vocab.txt) or unbroken dumps
MIN_DOC_CHARS = 200
FILES_PER_ROUND = 8  # files taken from each package per round-robin turn

DOC_SUFFIXES = (".md", ".rst", ".txt")
SKIP_DIRS = {"__pycache__", "tests", "test", "testing", "_vendor", "vendor", "examples", "benchmarks"}
# Legal and packaging boilerplate, word lists, requirement files: English-ish but not prose we want.
SKIP_NAME = re.compile(r"^(licen[cs]e|copying|notice|authors|contributors|third_party|patents|"
                       r"requirements|entry_points|top_level|record|installer|requested|wheel|vocab|merges|"
                       r"dependency_links|namespace_packages|sources|zip-safe)", re.IGNORECASE)

_STOPWORDS = frozenset("""
a about above after again all also an and any are as at be because been before being between both but by
can could did do does doing each for from had has have having he her here his how i if in into is it its
itself just may might more most must no not now of on once one only or other our out over own same she
should so some such than that the their them then there these they this those through to too under until
up very was we were what when where which while who whom why will with would you your
""".split())


# --------------------------------------------------------------------------------------------------
# Finding files
# --------------------------------------------------------------------------------------------------

def site_packages_roots() -> list[Path]:
    """The running interpreter's site-packages folders (purelib, platlib), existing, deduplicated."""
    paths = sysconfig.get_paths()
    roots = dict.fromkeys(Path(paths[key]).resolve() for key in ("purelib", "platlib") if key in paths)
    return [root for root in roots if root.is_dir()]


def _wanted(path: Path) -> bool:
    name = path.name
    if name == "METADATA":
        return path.parent.name.endswith(".dist-info")
    if name.endswith(".py"):
        return True
    return name.lower().endswith(DOC_SUFFIXES) and not SKIP_NAME.match(name)


def find_package_files(roots: Sequence[Path]) -> dict[str, list[tuple[Path, str]]]:
    """``{package: [(path, source name), ...]}``, both levels sorted; package = top-level entry."""
    packages: dict[str, list[tuple[Path, str]]] = {}
    for root in roots:
        root = Path(root)
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = Path(dirpath).relative_to(root)
            # Skip test suites, vendored copies and hidden folders; dist-info only for METADATA.
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if not _wanted(path):
                    continue
                if len(rel_dir.parts) > 0 and rel_dir.parts[0].endswith(".dist-info") and name != "METADATA":
                    continue
                try:
                    if path.stat().st_size > MAX_FILE_BYTES:
                        continue
                except OSError:
                    continue
                rel = path.relative_to(root).as_posix()
                top = rel.split("/", 1)[0]
                package = top[:-3] if top.endswith(".py") else top
                packages.setdefault(package, []).append((path, rel))
    return {name: packages[name] for name in sorted(packages)}


def round_robin(packages: dict[str, list[tuple[Path, str]]], per_turn: int) -> Iterator[tuple[Path, str]]:
    """Interleave packages: ``per_turn`` files of each package in turn, until all are used up."""
    lists = [files for _, files in sorted(packages.items())]
    offset = 0
    while any(offset < len(files) for files in lists):
        for files in lists:
            yield from files[offset:offset + per_turn]
        offset += per_turn


# --------------------------------------------------------------------------------------------------
# Extracting raw text
# --------------------------------------------------------------------------------------------------

_DEFS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
# Statements that can contain definitions (TryStar: Python 3.11+).
_COMPOUND = _DEFS + tuple(getattr(ast, name) for name in ("If", "For", "AsyncFor", "While", "With", "AsyncWith",
                                                          "Try", "TryStar", "Match") if hasattr(ast, name))


def _statement_lists(node: ast.AST) -> Iterator[list]:
    """The statement lists directly inside a statement (bodies of defs, if/for/while/with/try)."""
    for field in ("body", "orelse", "finalbody"):
        value = getattr(node, field, None)
        if isinstance(value, list):
            yield value
    for handler in getattr(node, "handlers", ()):
        yield handler.body
    for case in getattr(node, "cases", ()):  # match statements
        yield case.body


def python_docstrings(source: str) -> list[str]:
    """Module, class and function docstrings of Python source, cleaned of indentation (``ast``).

    Only statement bodies are visited (never expressions): docstrings can only live there, and a full
    ``ast.walk`` costs more than the parse itself.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    docs = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Module, *_DEFS)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                docs.append(doc)
        for statements in _statement_lists(node):
            # Reversed so that popping from the stack visits definitions in source order.
            stack.extend(reversed([s for s in statements if isinstance(s, _COMPOUND)]))
    return docs


def metadata_description(raw: str) -> str:
    """The long description (message body) of a wheel's ``METADATA`` file."""
    message = email.parser.Parser().parsestr(raw)
    body = message.get_payload()
    if not isinstance(body, str) or not body.strip():
        body = message.get("Description", "") or ""
    return body


def raw_texts(path: Path) -> list[str]:
    """The documentation texts of one file (docstrings, a document, or a package description)."""
    try:
        raw = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    if path.name.endswith(".py"):
        # Files without triple quotes have no multi-line docstrings worth the parse.
        if '"""' not in raw and "'''" not in raw:
            return []
        return python_docstrings(raw)
    if path.name == "METADATA":
        return [metadata_description(raw)]
    return [raw]


# --------------------------------------------------------------------------------------------------
# Cleaning markup into prose paragraphs
# --------------------------------------------------------------------------------------------------

_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+_:.<>])\1{2,}\s*$")
_TABLE = re.compile(r"^\s*(\||\+[-=+]|[-=]{3,}\s+[-=]{3,})")
_FENCE = re.compile(r"^\s*(```|~~~)")
_DIRECTIVE = re.compile(r"^\s*\.\.(\s|$)")  # reST directive, comment, target or substitution
_BULLET = re.compile(r"^\s*(?:[-*+\u2022]|\d+[.)]|#\.|\([a-z0-9]\))\s+")
_FIELD = re.compile(r"^\s*:[\w .`~-]+:\s*")  # :param x: / :returns: / :type x:
_SECTION = re.compile(r"^\s*[A-Z][\w ]{0,30}:\s*$")  # Args: / Returns: / Example usage:
# Parameter headers: "x (int):", "loss (`torch.FloatTensor` of shape `(1,)`):", "x, y : array_like".
_PARAM_HEADER = re.compile(r"^\s*\**[\w.\[\]]+(?:,\s*\**[\w.\[\]]+)*\**\s*(?:\(.*\)\s*:|\s:\s*[^.]{0,80})\s*$")
_PARAM_INLINE = re.compile(r"^\s*\**\w+\**\s*\([^)]{0,80}\):\s+(?=\S)")  # x (int): The input.
_MD_HEADING = re.compile(r"^\s*#{1,6}\s")
_HTMLISH = re.compile(r"^\s*<[^>]+>\s*$|^\s*<!--")


def markup_to_paragraphs(text: str) -> list[str]:
    """Split reST/Markdown/docstring text into paragraphs of plain text, dropping code and markup.

    Dropped: fenced and indented code (``::`` literal blocks), doctests and their output, directives
    with their bodies, headings and adornments, tables, HTML lines, docstring section and parameter
    headers. A dropped line also ends the current paragraph, so text on both sides never merges.
    """
    lines = textwrap.dedent(text.replace("\r\n", "\n").replace("\r", "\n").expandtabs(4)).split("\n")
    paragraphs: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            paragraphs.append(" ".join(current))
            current.clear()

    skip_indent: int | None = None  # skipping an indented block deeper than this
    in_fence = in_doctest = False
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if in_fence:
            in_fence = not _FENCE.match(line)
            continue
        if skip_indent is not None:
            if not stripped or indent > skip_indent:
                continue
            skip_indent = None
        if in_doctest:
            if stripped:
                continue
            in_doctest = False
        if not stripped:
            flush()
            continue
        if _FENCE.match(line):
            flush()
            in_fence = True
            continue
        if stripped.startswith((">>>", "...", "$ ", "In [")):
            flush()
            in_doctest = True
            continue
        if _DIRECTIVE.match(line):
            flush()
            skip_indent = indent
            continue
        if _ADORNMENT.match(stripped):
            if len(current) == 1:  # the line above was a reST section title: drop it
                current.clear()
            flush()
            continue
        if (_TABLE.match(line) or _MD_HEADING.match(line)
                or _HTMLISH.match(line) or _SECTION.match(line) or _PARAM_HEADER.match(line)):
            flush()
            continue
        if _BULLET.match(line):
            flush()
            stripped = _BULLET.sub("", stripped)
        stripped = _FIELD.sub("", stripped)
        stripped = _PARAM_INLINE.sub("", stripped)
        if stripped.endswith("::"):  # reST: an indented literal (code) block follows
            current.append(stripped[:-1])
            flush()
            skip_indent = indent
            continue
        current.append(stripped)
    flush()
    return [p for p in (clean_inline(p) for p in paragraphs) if p]


_INLINE_SUBS = [
    (re.compile(r"!\[[^\]]*\]\([^)]*\)"), ""),  # markdown image
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # markdown link -> its text
    (re.compile(r"\[([^\]]+)\]\[[^\]]*\]"), r"\1"),  # markdown reference link
    (re.compile(r":[\w:+-]+:`~?(?:[^`<]*?\.)?([^`<.]+?)(?:\s*<[^>]*>)?`"), r"\1"),  # :func:`~a.b` -> b
    (re.compile(r"`([^`<]+?)\s*<[^>]+>`_{1,2}"), r"\1"),  # `text <url>`_ -> text
    (re.compile(r"`{1,2}~?([^`]+)`{1,2}_{0,2}"), r"\1"),  # ``literal`` / `ref`_ / `~a.b` -> text
    (re.compile(r"\*\*([^*]+)\*\*"), r"\1"),  # strong (not __x__: those are Python dunder names)
    (re.compile(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])"), r"\1"),  # emphasis
    (re.compile(r"<[^<>\s][^<>]*>"), ""),  # html tags, <autolinks>
    (re.compile(r"\bhttps?://\S+|\bwww\.\S+"), ""),  # bare urls
    (re.compile(r"\|[\w -]+\|_?"), ""),  # reST substitutions |name|
    (re.compile(r"\\(.)"), r"\1"),  # reST/markdown escapes
    (re.compile(r"\s+"), " "),
]


def clean_inline(paragraph: str) -> str:
    """Strip inline reST/Markdown markup, urls and HTML; collapse whitespace."""
    for pattern, repl in _INLINE_SUBS:
        paragraph = pattern.sub(repl, paragraph)
    return paragraph.strip()


_CODE_CHARS = b"{}[]<>=_\\|#$@^~;`"
_ASCII_LETTERS = string.ascii_letters.encode()
_IDENTIFIER = re.compile(r"\w+[._(]\w|[a-z][A-Z]|\w\(\)|^--?\w")


def is_prose(paragraph: str) -> bool:
    """Whether a paragraph reads as English sentences rather than code, lists of names or other text.

    Tests: length bounds; mostly ASCII letters; few code symbols; few identifier-like words
    (``a.b``, ``snake_case``, ``camelCase``, ``f()``); enough English function words; ends a sentence.
    """
    n = len(paragraph)
    if not MIN_PARAGRAPH_CHARS <= n <= MAX_PARAGRAPH_CHARS:
        return False
    chars = paragraph.replace(" ", "")
    ascii_chars = chars.encode("ascii", "ignore")  # counted with bytes.translate: C speed
    letters = len(ascii_chars) - len(ascii_chars.translate(None, _ASCII_LETTERS))
    if letters < 0.8 * len(chars):
        return False
    if len(ascii_chars) - len(ascii_chars.translate(None, _CODE_CHARS)) > 0.02 * len(chars):
        return False
    words = paragraph.split()
    if len(words) < 6:
        return False
    if sum(bool(_IDENTIFIER.search(w)) for w in words) > 0.1 * len(words):
        return False
    stop = sum(w.strip(".,;:!?()\"'").lower() in _STOPWORDS for w in words)
    if stop < 3 or stop < 0.2 * len(words):
        return False
    return paragraph.rstrip("\"')]\u201d\u2019")[-1:] in ".!?"


def file_paragraphs(path: Path) -> list[str]:
    """Clean prose paragraphs of one file, in order (runs in worker processes)."""
    paragraphs = []
    for raw in raw_texts(path):
        paragraphs.extend(p for p in markup_to_paragraphs(raw) if is_prose(p))
    return paragraphs


def _file_job(item: tuple[Path, str]) -> tuple[str, list[str]]:
    path, source = item
    return source, file_paragraphs(path)


def _normalized_hash(text: str) -> bytes:
    return hashlib.blake2b(" ".join(text.lower().split()).encode("utf-8"), digest_size=16).digest()


# --------------------------------------------------------------------------------------------------
# Building the corpus
# --------------------------------------------------------------------------------------------------

@dataclass
class DemoCorpusSummary:
    """What was built: documents/characters of the corpus, MDS samples per split, seconds taken."""

    documents: int
    characters: int
    files_read: int
    duplicate_paragraphs: int
    split_samples: dict[str, int]
    seconds: float
    out_root: str

    @property
    def approx_tokens(self) -> int:
        return int(self.characters / CHARS_PER_TOKEN)

    def __str__(self) -> str:
        splits = ", ".join(f"{name} {count:,}" for name, count in self.split_samples.items())
        return (f"Demo corpus in {self.out_root}: {self.documents:,} documents, {self.characters:,} characters "
                f"(~{self.approx_tokens:,} bert-base-uncased tokens) from {self.files_read:,} files; "
                f"{self.duplicate_paragraphs:,} duplicate paragraphs dropped; MDS samples: {splits}; "
                f"{self.seconds:.1f} s.")


def _default_signals() -> None:
    """In a reading worker: SIGTERM ends it, and Ctrl-C is left to the parent. A forked worker inherits the
    parent's handlers, and Composer (imported by anything that trains) installs one that turns SIGTERM into
    sys.exit; a worker that gets it while waiting on the pool's task queue can stay there, and the pool's
    terminate() then waits for it forever."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def collect_documents(roots: Sequence[Path], max_chars: int, workers: int = 0,
                      progress: bool = False) -> tuple[list[dict[str, str]], int, int]:
    """Deduplicated prose documents (one per file) until ``max_chars`` characters.

    Files are read in a fixed round-robin order over packages; workers only parallelize the reading,
    results are consumed in that order, so the output does not depend on ``workers``.
    Returns (documents as ``{"text", "source"}``, files read, duplicate paragraphs dropped).
    """
    order = list(round_robin(find_package_files(roots), FILES_PER_ROUND))
    seen: set[bytes] = set()
    documents: list[dict[str, str]] = []
    total = files_read = duplicates = 0
    workers = workers or min(os.cpu_count() or 1, 8)
    batch = 64 * workers  # files handed out per step; one partly used batch is wasted at the end
    pool = None
    if workers > 1:
        pool = get_context("fork" if hasattr(os, "fork") else "spawn").Pool(workers, initializer=_default_signals)
    bar = tqdm(total=max_chars, unit=" chars", unit_scale=True, desc="demo corpus", disable=not progress)
    try:
        for start in range(0, len(order), batch):
            items = order[start:start + batch]
            results = pool.map(_file_job, items, chunksize=8) if pool else map(_file_job, items)
            for source, paragraphs in results:
                files_read += 1
                kept = []
                for paragraph in paragraphs:
                    digest = _normalized_hash(paragraph)
                    if digest in seen:
                        duplicates += 1
                        continue
                    seen.add(digest)
                    kept.append(paragraph)
                text = "\n".join(kept)
                if len(text) < MIN_DOC_CHARS:
                    continue
                documents.append({"text": text, "source": source})
                total += len(text)
                bar.update(len(text))
                if total >= max_chars:
                    return documents, files_read, duplicates
        return documents, files_read, duplicates
    except BaseException:
        if pool:  # an error or Ctrl-C: stop the workers (SIGTERM, which _default_signals keeps fatal in them)
            pool.terminate()
        raise
    finally:
        bar.close()
        if pool:
            pool.close()  # normally the workers are idle here and each exits on its own; after terminate() a no-op
            pool.join()


def write_jsonl_gz(documents: Iterable[dict[str, str]], path: Path) -> None:
    """Write JSON lines, gzip without timestamp (byte-identical reruns), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        with io.TextIOWrapper(gz, encoding="utf-8") as handle:
            for doc in documents:
                handle.write(json.dumps(doc, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def demo_corpus_exists(out_root: str | os.PathLike) -> bool:
    """Whether ``out_root`` holds a complete demo corpus (the jsonl file and all four MDS splits)."""
    out = Path(out_root)
    return (out / CORPUS_FILE).is_file() and all((out / s / "index.json").is_file() for s in SPLIT_NAMES)


def build_demo_corpus(out_root: str | os.PathLike, *, max_chars: int = DEFAULT_MAX_CHARS,
                      chunk_chars: int = DEFAULT_CHUNK_CHARS, val_fraction: float = 0.02,
                      train_small: int = 10_000, val_small: int = 1_000,
                      roots: Sequence[str | os.PathLike] | None = None, workers: int = 0,
                      overwrite: bool = False, progress: bool = True) -> DemoCorpusSummary:
    """Build ``corpus.jsonl.gz`` and the MDS splits in ``out_root`` from installed package documentation.

    Args:
        max_chars: Stop collecting once this many characters of prose are gathered.
        chunk_chars: MDS samples are documents cut at paragraph/sentence boundaries to at most this many
            characters (600 suits ``max_seq_len=128``).
        val_fraction, train_small, val_small: Passed to :func:`~mosaicbert.data.convert.convert_text`.
        roots: Folders to read (default: this interpreter's site-packages).
        workers: Reading processes (0: one per CPU core, at most 8).
        overwrite: Replace an existing corpus; otherwise an existing one is an error.
    """
    started = time.perf_counter()
    out = Path(out_root)
    corpus_path = out / CORPUS_FILE
    if not overwrite:
        if corpus_path.exists():
            raise RecipeError(
                f"A demo corpus already exists at {corpus_path}. Nothing was changed. Fix: pass --overwrite "
                "to rebuild it, or --skip_existing to keep a complete one, or choose another --out_root.")
        check_outputs(out, SPLIT_NAMES, overwrite=False)
    roots = [Path(r) for r in roots] if roots is not None else site_packages_roots()
    if not roots:
        raise RecipeError("No site-packages folder found for this interpreter. Fix: run the build with the "
                          "project's virtual environment (`make demo`), or pass --roots.")

    documents, files_read, duplicates = collect_documents(roots, max_chars, workers, progress)
    if not documents:
        raise RecipeError(f"No English prose found under {', '.join(map(str, roots))}. Fix: run the build with "
                          "the project's virtual environment after `make install`, or pass other --roots.")
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_gz(documents, corpus_path)
    counts = convert_text([corpus_path], out, val_fraction=val_fraction, chunk_chars=chunk_chars,
                          train_small=train_small, val_small=val_small, overwrite=overwrite, progress=progress)
    return DemoCorpusSummary(documents=len(documents), characters=sum(len(d["text"]) for d in documents),
                             files_read=files_read, duplicate_paragraphs=duplicates, split_samples=counts,
                             seconds=time.perf_counter() - started, out_root=str(out))
