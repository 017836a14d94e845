"""The README keeps its promises: every test its Guarantees table names exists, it stays a short
user's guide, and the two commands it starts with are targets of the Makefile.

A reference in the table's last column is a backquoted path under ``tests/``: a folder, a file,
or ``file::name`` (a test function or class; ``Class::method`` for a method). ``…::name`` names
another test in the file of the reference before it in the same cell.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"
MAX_README_LINES = 380
ELLIPSIS = "…"


def section(markdown: str, title: str) -> str:
    """The body of the ``## title`` section (up to the next second-level heading)."""
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def table_rows(body: str) -> list[list[str]]:
    """The body rows of the first Markdown table in ``body``, as lists of cells."""
    rows = []
    lines = [line.strip() for line in body.splitlines() if line.strip().startswith("|")]
    for line in lines[2:]:  # the header and the |---| line
        cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
        rows.append([cell.strip() for cell in cells])
    return rows


def references_in(cell: str) -> list[str]:
    """The test references of one "proven by" cell, each with its file (``…`` resolved)."""
    references = []
    current_file = None
    for code in re.findall(r"`([^`]+)`", cell):
        if code.startswith(ELLIPSIS):
            if current_file is None:
                raise ValueError(f"{code!r} has no earlier file in its cell to refer to")
            code = current_file + code[len(ELLIPSIS) :]
        if not code.startswith("tests/"):
            continue
        current_file = code.split("::", 1)[0]
        references.append(code)
    return references


def _names_in(node: ast.AST) -> dict[str, ast.AST]:
    names: dict[str, ast.AST] = {}
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[child.name] = child
        elif isinstance(child, ast.Assign):
            for target in child.targets:
                if isinstance(target, ast.Name):
                    names[target.id] = child
    return names


def missing_reason(reference: str, root: Path = ROOT) -> str | None:
    """Why ``reference`` does not name an existing test under ``root``, or None when it does."""
    path_text, *names = reference.split("::")
    path = root / path_text
    if not path.resolve().is_relative_to((root / "tests").resolve()):
        return "is not under tests/"
    if not path.exists():
        return "no such file or folder"
    if not names:
        if path.is_dir() and not any(path.rglob("test_*.py")):
            return "a folder without test files"
        return None
    if not path.is_file():
        return "names a test inside something that is not a file"
    scope: ast.AST = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for name in names:
        name = name.split("[", 1)[0]  # a parametrized id
        found = _names_in(scope).get(name)
        if found is None:
            return f"no test named {name!r} in {path_text}"
        scope = found
    return None


def missing_tests(readme_text: str, root: Path = ROOT) -> list[str]:
    """Every reference of the Guarantees table that names no existing test, with the reason."""
    problems = []
    for row in table_rows(section(readme_text, "Guarantees")):
        promise, proven_by = row[0], row[-1]
        try:
            references = references_in(proven_by)
        except ValueError as error:
            problems.append(f"{promise[:60]!r}: {error}")
            continue
        if not references:
            problems.append(f"{promise[:60]!r}: names no test")
        for reference in references:
            reason = missing_reason(reference, root)
            if reason:
                problems.append(f"{reference}: {reason} (row {promise[:60]!r})")
    return problems


def test_every_test_the_guarantees_table_names_exists():
    readme_text = README.read_text(encoding="utf-8")
    rows = table_rows(section(readme_text, "Guarantees"))
    assert len(rows) >= 20, f"the Guarantees table has {len(rows)} rows; was it parsed?"
    problems = missing_tests(readme_text)
    assert not problems, "README's Guarantees table names tests that do not exist:\n" + "\n".join(
        problems
    )


def test_a_row_naming_a_test_that_does_not_exist_is_reported():
    this = "`tests/foundation/test_readme.py::test_every_test_the_guarantees_table_names_exists`"
    readme_text = "\n".join(
        [
            "## Guarantees",
            "",
            "| promise | proven by |",
            "|---|---|",
            f"| Kept | {this} |",
            f"| Not kept | {this}, `…::test_that_was_never_written` |",
            "| No file | `tests/foundation/test_nothing_here.py` |",
            "| No proof | the word of the author |",
            "",
            "## Next",
        ]
    )
    problems = missing_tests(readme_text)

    assert len(problems) == 3, problems
    assert "test_that_was_never_written" in problems[0]
    assert "tests/foundation/test_nothing_here.py" in problems[1]
    assert "names no test" in problems[2]


@pytest.mark.parametrize(
    "reference",
    [
        "tests/foundation/test_readme.py::test_every_test_the_guarantees_table_names_exists",
        "tests/foundation/test_readme.py",
        "tests/foundation/",
    ],
)
def test_references_to_functions_files_and_folders_resolve(reference):
    assert missing_reason(reference) is None


def test_the_readme_is_a_short_guide():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines; keep it at most {MAX_README_LINES}: "
        "detail belongs in docs/"
    )


def test_the_two_commands_of_the_readme_are_makefile_targets():
    block = re.search(
        r"```\w*\n(.*?)```", section(README.read_text(encoding="utf-8"), "Two commands"), re.S
    )
    assert block, "the 'Two commands' section has no code block"
    commands = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    commands = [command for command in commands if command]
    assert commands == ["make run", "make test"]

    targets = set(
        re.findall(r"^([A-Za-z0-9_.-]+):(?!=)", MAKEFILE.read_text(encoding="utf-8"), re.M)
    )
    for command in commands:
        target = command.split()[1]
        assert target in targets, (
            f"README says `{command}`, but the Makefile has no {target!r} target"
        )
