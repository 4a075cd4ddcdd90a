"""Every error code is declared once, with its meaning, and documented in the README."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from changewatch.schema.errors import Code, JobError

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("worker", "producer", "schema")


def _readme_codes() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| code | meaning |") :].split("\n\n", 1)[0]
    return dict(re.findall(r"^\| `([a-z_]+)` \| (.+) \|$", table, re.M))


def test_the_readme_table_is_the_registry() -> None:
    """Operators read codes in the README: none missing there, none made up."""
    assert _readme_codes() == {code.value: code.meaning for code in Code}


def test_every_code_has_a_one_line_meaning() -> None:
    for code in Code:
        assert code.meaning and "\n" not in code.meaning, code
        assert code == code.value and isinstance(code, str)


def test_codes_stay_plain_strings_on_the_wire() -> None:
    err = JobError(Code.IMAGE_MISSING, "cannot read s3://b/k")
    assert type(err.code) is str and err.code == "image_missing"


def test_no_product_module_spells_a_code_as_a_literal() -> None:
    """A code typed as a string in a JobError would escape the registry and the README."""
    literals = []
    for folder in PRODUCT:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "id", None) == "JobError"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                ):
                    literals.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert literals == []
