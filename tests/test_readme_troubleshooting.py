"""The README's troubleshooting section: in the seed's order, and every error message it quotes is one the code really
produces — an edited message in the code (or a misquote in the README) fails here.

Markup (README, section "Troubleshooting"): Error: `message` quotes the platform; `…` stands for a part that varies
(a field name, a path), so each fixed piece must appear, in order, inside one string of the source (a Python string
literal, f-string placeholders being the varying parts; a line of a shell/JavaScript/TypeScript file). Error (from
torch): `message` is a library's or the OS's message: not looked up in the code, and it must not be one of ours.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# Where messages come from: the platform, its scripts and the console; never the README, the tests or docs.
SOURCE_DIRS = ["control_plane", "gpu_agent", "gateway", "trainers", "protos", "scripts", "frontend/src",
               "frontend/server"]
SOURCE_FILES = ["start_finetune_system.sh", "run_tests.sh", "test_finetune_api.py"]
TEXT_SUFFIXES = {".sh", ".mjs", ".js", ".ts", ".tsx"}
QUOTE = re.compile(r"Error(?: \(from ([^)]+)\))?: `([^`]+)`")
PLACEHOLDER = "\x00"
# The seed's 故障排除, in its order.
SEED_ORDER = ["services do not start", "console does not start", "task does not start", "training stops",
              "where the logs are"]


def troubleshooting_section(readme: str) -> str:
    start = readme.index("\n## Troubleshooting\n")
    end = readme.find("\n## ", start + 1)
    return readme[start:end if end != -1 else len(readme)]


def quotes(section: str) -> list[tuple[str | None, str]]:
    """(library or None, message) for every quoted message."""
    return [(source, message) for source, message in QUOTE.findall(section.replace("\n", " "))]


def python_strings(text: str) -> list[str]:
    """Every string literal, implicit concatenations joined (the parser does it) and f-string fields as placeholders."""
    strings = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.append(node.value)
        elif isinstance(node, ast.JoinedStr):
            strings.append("".join(
                part.value if isinstance(part, ast.Constant) else PLACEHOLDER for part in node.values))
    return strings


def source_strings(root: Path = REPO_ROOT) -> list[str]:
    files = [root / name for name in SOURCE_FILES if (root / name).is_file()]
    for directory in SOURCE_DIRS:
        files += [p for p in sorted((root / directory).rglob("*")) if p.is_file() and "node_modules" not in p.parts]
    strings: list[str] = []
    for path in files:
        if path.suffix == ".py":
            strings += python_strings(path.read_text(encoding="utf-8"))
        elif path.suffix in TEXT_SUFFIXES and not path.name.endswith((".test.ts", ".test.tsx")):
            strings += path.read_text(encoding="utf-8").splitlines()
    return strings


def pieces(message: str) -> list[str]:
    return [piece.strip() for piece in message.split("…") if piece.strip()]


def produced(message: str, strings: list[str]) -> bool:
    """Each fixed piece of the message, in order, within one string of the source (never across a placeholder)."""
    wanted = pieces(message)
    for text in strings:
        position = 0
        for piece in wanted:
            found = text.find(piece, position)
            if found < 0:
                break
            position = found + len(piece)
        else:
            return True
    return False


@pytest.fixture(scope="module")
def section() -> str:
    return troubleshooting_section((REPO_ROOT / "README.md").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def strings() -> list[str]:
    return source_strings()


def test_the_section_follows_the_seed_order(section):
    headings = [line.removeprefix("### ").lower() for line in section.splitlines() if line.startswith("### ")]
    positions = []
    for topic in SEED_ORDER:
        matching = [i for i, heading in enumerate(headings) if topic in heading]
        assert matching, f"no troubleshooting heading about {topic!r}: {headings}"
        positions.append(matching[0])
    assert positions == sorted(positions), f"not in the seed's order: {headings}"


def test_every_quoted_platform_message_is_produced_by_the_code(section, strings):
    ours = [message for source, message in quotes(section) if not source]
    assert len(ours) >= 25, f"expected the section to quote the platform's messages, found {ours}"
    missing = [message for message in ours if not produced(message, strings)]
    assert not missing, "quoted in the README's troubleshooting, produced nowhere in the code:\n" + "\n".join(missing)


def test_messages_marked_as_a_library_s_are_not_ours(section, strings):
    theirs = [(source, message) for source, message in quotes(section) if source]
    assert {source for source, _ in theirs} >= {"torch", "the OS", "uvicorn", "gRPC", "Node.js"}
    ours = [f"{message} (marked as {source}'s)" for source, message in theirs if produced(message, strings)]
    assert not ours, "found in our code: quote them as Error: without a source\n" + "\n".join(ours)


def test_an_edited_message_is_noticed(section, strings):
    """The check is not vacuous: a message changed by one word (here: in the quote) is no longer found."""
    for source, message in quotes(section):
        if source:
            continue
        longest = max(pieces(message), key=len)
        edited = message.replace(longest, longest[: len(longest) // 2] + " xyzzy " + longest[len(longest) // 2:], 1)
        assert not produced(edited, strings), f"an edited {message!r} would still pass"


def test_the_matcher_reads_f_strings_and_implicit_concatenation():
    source = ('raise ConfigError(field, f"{field}: {given!r} is outside the output root "\n'
              '                         f"({shown(root)}); give a directory inside it")\n')
    strings = python_strings(source)
    assert produced("is outside the output root (…); give a directory inside it", strings)
    assert produced("… is outside the output root", strings)
    assert not produced("is outside the output root; give a directory inside it", strings)  # a placeholder between
    assert not produced("output_dir: is outside the output root", strings)  # the field is a placeholder
    edited = python_strings(source.replace("output root", "output folder"))
    assert not produced("is outside the output root (…); give a directory inside it", edited)


def test_the_start_script_says_when_node_is_missing(monkeypatch, capsys):
    """The console's first failure the section quotes is the start script's, not a traceback."""
    spec = importlib.util.spec_from_file_location("bugagaric_system_script", REPO_ROOT / "scripts" / "system.py")
    system = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(system)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert system.ensure_console_build() is False
    error = capsys.readouterr().err
    assert produced("the console needs Node.js … or newer (…): install it and run this again", [error])
    assert "no `node` on PATH" in error
    assert system.node_required() is not None  # read from frontend/package.json's engines
