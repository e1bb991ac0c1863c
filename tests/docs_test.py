"""The repository stands on its own: every document the code cites is in docs/.

* No file in the product (tfprune/, bench/, scripts/, tests/, tflite_demo/, docs/,
  README.md) cites the design notes that lived outside the repository (the upper-case
  algorithms / export notes, or a path into a `shared/` directory beside the checkout).
  Cite `docs/algorithms.md section N` or `docs/export.md` instead.
* Every `docs/<file>.md section N` cited anywhere names a file that exists and a
  section N that is a heading of it (`## N. Title`).
* docs/ itself is consistent: section numbers are unique and ascending, docs/README.md
  indexes every document, relative links resolve, and repository paths it names exist.
"""
import os
import re

import pytest

# realpath: under `bazel test` this file is a runfiles symlink into the source tree.
ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
DOCS = os.path.join(ROOT, "docs")
SCANNED = ("tfprune", "bench", "scripts", "tests", "tflite_demo", "docs", "README.md")
TEXT_SUFFIXES = (".py", ".md", ".cc", ".h", ".c", ".sh", ".txt", ".cfg", ".toml", ".kt",
                 ".kts", ".xml", ".json", ".gradle")
TEXT_NAMES = ("Makefile", "BUILD", "WORKSPACE")
SKIPPED_DIRS = ("__pycache__", "build", "dist", "out", "runs", "node_modules")

# Built from pieces so that this file does not match its own patterns.
_OLD_NOTES = "(?:" + "ALGORITHMS" + "|" + "EXPORT" + r")\.md"
_SHARED = "sha" + "red"
FORBIDDEN = re.compile(r"\b" + _OLD_NOTES + r"|/work/" + _SHARED + r"\b|\.\./" + _SHARED + "/")
# `docs/algorithms.md section 5`, `docs/export.md, section 4`, `docs/export.md §4`.
SECTION_CITATION = re.compile(
    r"(?<![\w/.-])docs/([\w-]+\.md),? ?(?:section|§) ?(\d+)")
DOC_CITATION = re.compile(r"(?<![\w/.-])docs/([\w-]+\.md)\b")
HEADING = re.compile(r"^#{1,6} (\d+)\. \S", re.M)


def _text_files():
  for top in SCANNED:
    path = os.path.join(ROOT, top)
    if os.path.isfile(path):
      yield path
      continue
    for dirpath, dirnames, filenames in os.walk(path):
      dirnames[:] = sorted(d for d in dirnames
                           if not d.startswith((".", "_", "bazel-")) and
                           d not in SKIPPED_DIRS and not d.endswith(".egg-info"))
      for name in sorted(filenames):
        if name.endswith(TEXT_SUFFIXES) or name in TEXT_NAMES:
          yield os.path.join(dirpath, name)


def _read(path):
  with open(path, encoding="utf-8", errors="replace") as f:
    return f.read()


def _rel(path):
  return os.path.relpath(path, ROOT).replace(os.sep, "/")


def _lines_matching(pattern):
  """[(relative path, line number, line, match)] for every match in the scanned files."""
  found = []
  for path in _text_files():
    for number, line in enumerate(_read(path).splitlines(), 1):
      for match in pattern.finditer(line):
        found.append((_rel(path), number, line.strip(), match))
  return found


def _sections(doc_name):
  """The section numbers (as ints, in file order) of docs/<doc_name>."""
  return [int(n) for n in HEADING.findall(_read(os.path.join(DOCS, doc_name)))]


def _docs():
  return sorted(n for n in os.listdir(DOCS) if n.endswith(".md"))


# ----------------------------------------------------------------- the patterns themselves
def test_patterns_catch_old_citations_and_accept_new_ones():
  old = ["see " + "ALGORITHMS" + ".md section 0", "(" + "EXPORT" + ".md)",
         f"measured in /work/{_SHARED}/notes", f"../{_SHARED}/x"]
  assert all(FORBIDDEN.search(s) for s in old)
  assert not FORBIDDEN.search("see docs/algorithms.md section 0 and docs/export.md")
  assert not FORBIDDEN.search("a shared library; shared/nested layers; RESULTS_export.md")
  cited = [m.groups() for m in SECTION_CITATION.finditer(
      "(docs/algorithms.md section 5; docs/export.md, section 4; docs/export.md §9)")]
  assert cited == [("algorithms.md", "5"), ("export.md", "4"), ("export.md", "9")]
  assert not SECTION_CITATION.search("site/docs/algorithms.md section 5")
  assert HEADING.findall("# T\n## 0. Masks\ntext\n### 12. Sub\n## Untitled\n") == ["0", "12"]


# ----------------------------------------------------------------- the code's citations
def test_nothing_cites_documents_outside_the_repository():
  offenders = sorted({f"{path}:{number}: {line}" for path, number, line, _ in
                      _lines_matching(FORBIDDEN)})
  assert not offenders, (
      "These lines cite design notes that are not in the repository; cite "
      "docs/algorithms.md section N or docs/export.md (section N) instead:\n  " +
      "\n  ".join(offenders))


def test_every_cited_docs_file_exists():
  missing = [f"{path}:{number}: docs/{m.group(1)}" for path, number, _, m in
             _lines_matching(DOC_CITATION)
             if not os.path.isfile(os.path.join(DOCS, m.group(1)))]
  assert not missing, (f"cited files missing from docs/ (present: {_docs()}):\n  " +
                       "\n  ".join(missing))


def test_every_cited_section_is_a_heading_of_its_document():
  bad = []
  for path, number, _, m in _lines_matching(SECTION_CITATION):
    doc, section = m.group(1), int(m.group(2))
    if not os.path.isfile(os.path.join(DOCS, doc)):
      continue  # reported by test_every_cited_docs_file_exists
    sections = _sections(doc)
    if section not in sections:
      bad.append(f"{path}:{number}: docs/{doc} section {section} "
                 f"(docs/{doc} has sections {sections})")
  assert not bad, "cited sections that do not exist:\n  " + "\n  ".join(bad)


# ----------------------------------------------------------------- docs/ itself
@pytest.mark.parametrize("doc, expected", [("algorithms.md", list(range(10))),
                                           ("export.md", list(range(1, 10)))])
def test_reference_documents_keep_their_section_numbers(doc, expected):
  # Code cites these numbers: sections may be added at the end, never renumbered.
  sections = _sections(doc)
  assert sections[:len(expected)] == expected, f"docs/{doc} sections: {sections}"
  assert sections == sorted(set(sections)), f"docs/{doc}: duplicate or unordered {sections}"


def test_readme_indexes_every_document():
  readme = _read(os.path.join(DOCS, "README.md"))
  unlisted = [n for n in _docs() if n != "README.md" and f"({n})" not in readme]
  assert not unlisted, f"docs/README.md does not link {unlisted}: add them to its index"


@pytest.mark.parametrize("doc", _docs())
def test_relative_links_and_repository_paths_resolve(doc):
  text = _read(os.path.join(DOCS, doc))
  broken = []
  for target in re.findall(r"\]\(([^)\s]+)\)", text):
    if re.match(r"[a-z]+:", target) or target.startswith("#"):
      continue
    if not os.path.exists(os.path.join(DOCS, target.split("#")[0])):
      broken.append(target)
  # Repository paths named in backticks, e.g. `tfprune/masks.py`, `bench/RESULTS.md`.
  for target in re.findall(r"`((?:tfprune|bench|scripts|tests|tflite_demo)/[\w./-]*)`",
                           text):
    if not os.path.exists(os.path.join(ROOT, target)):
      broken.append(target)
  assert not broken, f"docs/{doc} points at paths that do not exist: {broken}"
