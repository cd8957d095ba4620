"""The prompt lock (``--bridge-prompts=check|update``): a real worker renders each predictor's messages with
no LM call; a change fails the test with a structural summary, a diff and the command that accepts it."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dspy_bridge._pytest._prompts import compare, load_lock, lock_path, save_lock

pytest_plugins = ["pytester"]

TEST_TEMPLATE = """
import pytest

@pytest.mark.mock
def test_triage(bridge):
    bridge.configure_lm("gemini/gemini-2.5-flash")
    program = bridge.create_program("{signature}", instructions="{instructions}", demos={demos})
    bridge.stub(program, {answer})
    assert bridge.execute(program, ticket="printer on fire")
"""
ORIGINAL = {
    "signature": "ticket -> urgency: str",
    "instructions": "Rate the ticket.",
    "demos": [],
    "answer": {"urgency": "high"},
}
CHANGED = {
    "signature": "ticket -> urgency: Literal['low', 'high']",
    "instructions": "Rate how urgent the ticket is.",
    "demos": [{"ticket": "lost mouse", "urgency": "low"}],
    "answer": {"urgency": "high"},
}


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--bridge-workers=1", *args)


def _printed_command(result: pytest.RunResult) -> list[str]:
    found = set(re.findall(r"(pytest \S+ --bridge-prompts=update)", result.stdout.str()))
    assert len(found) == 1, result.stdout.str()
    return shlex.split(found.pop())[1:]


@pytest.mark.slow
def test_check_fails_on_a_changed_prompt_and_the_printed_command_accepts_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=TEST_TEMPLATE.format(**ORIGINAL))
    lock = pytester.path / "cassettes" / "test_app" / "test_triage.prompts.yaml"

    missing = _run(pytester, "--bridge-prompts=check")  # no lock yet: the test fails, saying how to write one
    missing.assert_outcomes(failed=1)
    missing.stdout.fnmatch_lines(["*no prompt lock at *test_triage.prompts.yaml; write it with: pytest *"])
    _run(pytester, *_printed_command(missing)).assert_outcomes(passed=1)
    written = load_lock(lock)
    [program] = written["programs"]
    [predictor] = program["predictors"]
    assert (program["program"], program["adapter"], predictor["name"]) == ("ticket -> urgency: str", "chat", "self")
    assert "Rate the ticket." in predictor["messages"][0]["content"]
    assert predictor["messages"][-1]["content"].startswith("[[ ## ticket ## ]]\n{ticket}")  # placeholders, not data
    assert "urgency: str" not in lock.read_text() or "|" in lock.read_text()  # prompts stored as text blocks

    shown = subprocess.run(
        [sys.executable, "-m", "dspy_bridge.cli", "prompts", "show", "test_app.py::test_triage"],
        capture_output=True, text=True, check=False, cwd=pytester.path,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "=== ticket -> urgency: str / self (adapter chat, 0 demos): ticket: str -> urgency: str" in shown.stdout
    assert "--- [system]" in shown.stdout and "Rate the ticket." in shown.stdout

    pytester.makepyfile(test_app=TEST_TEMPLATE.format(**CHANGED))
    changed = _run(pytester, "--bridge-prompts=check", "-rN")
    changed.assert_outcomes(failed=1)
    changed.stdout.fnmatch_lines(
        [
            "*prompts differ from test_triage.prompts.yaml:",
            "*self: instructions changed; demos 0 → 1; urgency: str → Literal[[]'low', 'high'[]]",
            "*--- locked",
            "*+++ rendered now",
            "-*Rate the ticket.",
            "+*Rate how urgent the ticket is.",
            "*If the change is intended, accept it with: pytest *--bridge-prompts=update",
        ]
    )
    assert load_lock(lock) == written  # check never writes
    # The fix is the command the first failure printed (run above), so it is not run twice here.
    assert _printed_command(changed) == _printed_command(missing)


def _lock(instructions: str, outputs: dict[str, str], *, demos: int = 0, adapter: str = "chat") -> dict:
    predictor = {
        "name": "qa.predict",
        "instructions": instructions,
        "demos": demos,
        "inputs": {"question": "str"},
        "outputs": outputs,
        "messages": [{"role": "system", "content": f"{instructions}\nfields {sorted(outputs)}"}],
    }
    return {"version": 1, "test": "t", "dspy": "3.4.1", "programs": [{"program": "app:QA", "adapter": adapter,
                                                                     "predictors": [predictor]}]}  # fmt: skip


def test_the_summary_names_each_kind_of_change() -> None:
    before = _lock("Answer.", {"answer": "str"})
    assert compare(before, _lock("Answer.", {"answer": "str"})) is None
    assert compare(before, {**_lock("Answer.", {"answer": "str"}), "dspy": "3.5.0"}) is None  # same prompts
    summary, diff = compare(before, _lock("Answer briefly.", {"answer": "int", "why": "str"}, demos=2, adapter="json"))
    assert summary == [
        "qa.predict: instructions changed; demos 0 → 2; answer: str → int; output field why: str added; "
        "adapter chat → json"
    ]
    assert "-Answer." in diff and "+Answer briefly." in diff
    removed, _ = compare(_lock("A.", {"answer": "str", "why": "str"}), _lock("A.", {"answer": "str"}))
    assert removed == ["qa.predict: output field why removed"]
    two = {**before, "programs": before["programs"] * 2}
    changed_two = _lock("B.", {"answer": "str"})
    changed_two["programs"] = [before["programs"][0], changed_two["programs"][0]]
    assert compare(two, changed_two)[0] == ["app:QA: qa.predict: instructions changed"]  # named when several


def test_lock_files_sit_beside_the_cassettes_and_a_broken_one_says_what_to_do(tmp_path: Path) -> None:
    from dspy_bridge._exceptions import CassetteCorrupt

    assert lock_path(tmp_path / "m" / "test_a.bridge.yaml") == tmp_path / "m" / "test_a.prompts.yaml"
    assert lock_path(tmp_path / "m" / "test_a.yaml") == tmp_path / "m" / "test_a.prompts.yaml"  # legacy name
    path = tmp_path / "m" / "test_a.prompts.yaml"
    save_lock(path, _lock("Line one.\nLine two.", {"answer": "str"}))
    assert "|-" in path.read_text() or "|\n" in path.read_text()  # multi-line prompts as readable blocks
    assert load_lock(path) == _lock("Line one.\nLine two.", {"answer": "str"})
    path.write_text("programs: [unclosed")
    with pytest.raises(CassetteCorrupt, match="delete it and rerun with --bridge-prompts=update"):
        load_lock(path)


def test_prompts_show_names_the_missing_lock_and_the_command_that_writes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dspy_bridge._cli_prompts import lock_for_node_id
    from dspy_bridge.cli import main

    monkeypatch.chdir(tmp_path)
    assert lock_for_node_id("tests/test_a.py::TestX::test_y[mock]") == Path(
        "tests/cassettes/test_a/TestX.test_y-mock.prompts.yaml"
    )
    assert lock_for_node_id("tests/test_a.py::test_y", "rec") == Path("rec/test_a/test_y.prompts.yaml")
    assert main(["prompts", "show", "tests/test_a.py::test_y"]) == 1
    assert "write it with: pytest tests/test_a.py::test_y --bridge-prompts=update" in capsys.readouterr().err
    assert main(["prompts", "show", "not-a-test"]) == 2
    assert "neither a *.prompts.yaml file nor a test node id" in capsys.readouterr().err
    save_lock(tmp_path / "x.prompts.yaml", _lock("Answer.", {"answer": "str"}))
    assert main(["prompts", "show", "x.prompts.yaml", "--json"]) == 0
    assert '"qa.predict"' in capsys.readouterr().out


def test_a_broken_lock_fails_check_plainly_and_update_rewrites_it(tmp_path: Path) -> None:
    from collections import Counter

    from dspy_bridge._pytest._prompts import after_test

    class Rendering:  # only what after_test asks of a pool: the real render_prompts is tested above
        def request(self, command: str, args: dict, session_id: str) -> dict:
            if command == "create_program":
                return {"program_id": "p1"}
            return {
                "adapter": "chat",
                "dspy_version": "3.4.1",
                "predictors": _lock("A.", {"a": "str"})["programs"][0]["predictors"],
            }

        def close_session(self, session_id: str) -> None:
            pass

    cassette = tmp_path / "t.bridge.yaml"
    lock_path(cassette).write_text("programs: [unclosed")
    counts: Counter[str] = Counter()
    with pytest.raises(pytest.fail.Exception, match="is not a readable prompt lock") as failed:
        after_test("check", "t.py::t", cassette, [{"signature": "q -> a"}], Rendering(), counts)  # type: ignore[arg-type]
    assert "_prompts.py" not in str(failed.value)  # the message, not the plugin's frames
    after_test("update", "t.py::t", cassette, [{"signature": "q -> a"}], Rendering(), counts)  # type: ignore[arg-type]
    assert load_lock(lock_path(cassette))["programs"][0]["program"] == "q -> a"
    assert counts == Counter({"checked": 1, "changed": 1, "written": 1})
